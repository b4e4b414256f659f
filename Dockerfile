# bgserve control plane and slot server in one image.
#   docker build -t bgserve:0.1.0 .
#   docker run -p 8080:8080 -e BGSERVE_HOST=0.0.0.0 -e BGSERVE_AUTH_TOKENS=admin:... bgserve:0.1.0
# The default command is `bgserve serve`; KServe slots run `bgserve slot ...` from the same
# image, so the MLflow version that built a bundle is the one that loads it.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bgserve ./bgserve
# the postgres extra: the PostgreSQL driver for BGSERVE_STATE_URL in a cluster.
RUN pip install --no-cache-dir --prefix=/install ".[postgres]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BGSERVE_HOME=/var/lib/bgserve
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bgserve --create-home bgserve
COPY --from=build /install /usr/local
USER 10001:10001
WORKDIR /var/lib/bgserve
EXPOSE 8080
ENTRYPOINT ["bgserve"]
CMD ["serve"]
