# bgserve control plane and slot server in one image.
#   docker build -t bgserve:0.1.0 .
#   docker run -p 8080:8080 -e BGSERVE_HOST=0.0.0.0 -e BGSERVE_AUTH_TOKENS=admin:... bgserve:0.1.0
# The default command is `bgserve serve`; KServe slots run `bgserve slot ...` from the same
# image, so the MLflow version that built a bundle is the one that loads it.

# EXTRAS: postgres is the PostgreSQL driver for BGSERVE_STATE_URL in a cluster; add llm
# (`--build-arg EXTRAS=postgres,llm`) for slots that run LLM releases: llama.cpp is then
# compiled here without native CPU tuning, so the image runs on any x86-64 node.
ARG EXTRAS=postgres

FROM python:3.11-slim AS build
ARG EXTRAS
WORKDIR /src
RUN case ",$EXTRAS," in *,llm,*) apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake && rm -rf /var/lib/apt/lists/* ;; esac
COPY pyproject.toml README.md ./
COPY bgserve ./bgserve
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --prefix=/install ".[$EXTRAS]"

FROM python:3.11-slim
ARG EXTRAS
# llama.cpp's build uses OpenMP at run time.
RUN case ",$EXTRAS," in *,llm,*) apt-get update && apt-get install -y --no-install-recommends \
        libgomp1 && rm -rf /var/lib/apt/lists/* ;; esac
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
