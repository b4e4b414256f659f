"""The managed cloud backends' settings: ``settings.sagemaker`` (``BGSERVE_SAGEMAKER_*``),
``settings.azureml`` (``BGSERVE_AZUREML_*``), ``settings.databricks``
(``BGSERVE_DATABRICKS_*``) and ``settings.vertex`` (``BGSERVE_VERTEX_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from bgserve.settings.groups import Group, spelt_flat


class SageMakerGroup(Group):
    """Where and how the SageMaker backend hosts slots (``BGSERVE_SAGEMAKER_*``): one
    endpoint per deployment, one model and production variant per release."""

    model_config = spelt_flat("sagemaker_")

    region: str = Field(
        "", description="AWS region of the endpoints; empty takes boto3's (AWS_REGION, profile)."
    )
    endpoint_url: str = Field(
        "",
        description="The SageMaker API's URL when it is not AWS's own (a VPC endpoint, a "
        "test stand-in); empty uses the region's.",
    )
    runtime_url: str = Field(
        "",
        description="The SageMaker runtime's URL (InvokeEndpoint) when it is not AWS's own; "
        "empty uses the region's.",
    )
    cloudwatch_url: str = Field(
        "",
        description="CloudWatch's URL, where live analysis reads the variants' invocations "
        "and errors, when it is not AWS's own; empty uses the region's.",
    )
    role_arn: str = Field(
        "",
        description="IAM role SageMaker assumes to pull the slot image and the bundle "
        "(CreateModel's ExecutionRoleArn); required.",
    )
    image: str = Field(
        "",
        description="The bgserve image in ECR that SageMaker runs for each release "
        "(`bgserve slot` in SageMaker's container contract); required.",
    )
    instance_type: str = Field("ml.m5.large", description="Each variant's instance type.")
    instance_count: int = Field(1, ge=1, description="Each variant's initial instance count.")
    name_prefix: str = Field(
        "bgserve-",
        description="Prefix of the endpoint, endpoint config and model names bgserve "
        "creates (names longer than SageMaker's 63 characters are shortened with a digest).",
    )
    bundle_storage_uri: str = Field(
        "",
        description="S3 URI of a release's bundle as a model.tar.gz (CreateModel's "
        "ModelDataUrl), with {bundle_name}, {bundle_version}, {release}, {release_id}; "
        "empty: the slot loads the bundle from the MLflow registry.",
    )
    cloudwatch_read_seconds: float = Field(
        15.0,
        ge=0,
        le=300,
        description="How long live analysis reuses a reading of CloudWatch's counts (they "
        "change once a minute; each reading is a DescribeEndpoint and a GetMetricData call).",
    )
    poll_seconds: float = Field(
        5.0, gt=0, le=60, description="How often a wait for an endpoint's status polls it."
    )

    @field_validator("name_prefix")
    @classmethod
    def _prefix_is_a_name_start(cls, prefix: str) -> str:
        if prefix and not (prefix[0].isascii() and prefix[0].isalnum()):
            raise ValueError("must start with a letter or digit, as SageMaker names do")
        if any(not (c.isascii() and (c.isalnum() or c == "-")) for c in prefix):
            raise ValueError("may hold only letters, digits and '-', as SageMaker names do")
        if len(prefix) > 30:
            raise ValueError("must be at most 30 characters (names are 63 at most)")
        return prefix


class AzureMLGroup(Group):
    """Where and how the Azure ML backend hosts slots (``BGSERVE_AZUREML_*``): one managed
    online endpoint per deployment, one managed online deployment per release. Credentials
    are never settings: azure-identity's DefaultAzureCredential finds them (AZURE_CLIENT_ID,
    a managed identity, ``az login``)."""

    model_config = spelt_flat("azureml_")

    subscription_id: str = Field("", description="Azure subscription of the workspace; required.")
    resource_group: str = Field("", description="Resource group of the workspace; required.")
    workspace: str = Field("", description="Azure ML workspace the endpoints live in; required.")
    image: str = Field(
        "",
        description="The bgserve image (in a registry the workspace can pull from, e.g. its "
        "ACR) that each deployment runs as `serve`; required.",
    )
    instance_type: str = Field("Standard_DS3_v2", description="Each deployment's VM size.")
    instance_count: int = Field(1, ge=1, description="Each deployment's instance count.")
    name_prefix: str = Field(
        "bgserve-",
        description="Prefix of the endpoint names bgserve creates (Azure: 3-32 characters, "
        "letters, digits and '-', starting with a letter, unique within the region; longer "
        "names are shortened with a digest).",
    )
    poll_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How often a wait polls a deployment's provisioning state, and how long "
        "a change refused with 409 (another operation on the endpoint runs) waits to retry.",
    )
    metrics_read_seconds: float = Field(
        15.0,
        ge=0,
        le=50,
        description="How long live analysis reuses a reading of Azure Monitor's request "
        "counts (they change once a minute; each reading is one metrics query of the "
        "endpoint).",
    )

    @field_validator("name_prefix")
    @classmethod
    def _prefix_is_a_name_start(cls, prefix: str) -> str:
        if not prefix or not (prefix[0].isascii() and prefix[0].isalpha()):
            raise ValueError("must start with a letter, as Azure ML endpoint names do")
        if any(not (c.isascii() and (c.isalnum() or c == "-")) for c in prefix):
            raise ValueError("may hold only letters, digits and '-', as Azure ML names do")
        if len(prefix) > 16:
            raise ValueError("must be at most 16 characters (endpoint names are 32 at most)")
        return prefix


class DatabricksGroup(Group):
    """Where and how the Databricks backend serves releases (``BGSERVE_DATABRICKS_*``): one
    Model Serving endpoint per deployment, one served entity (the release's bundle, an MLflow
    model version in the workspace's registry or Unity Catalog) per release. Credentials are
    never settings: the Databricks SDK's unified authentication finds them (DATABRICKS_TOKEN,
    DATABRICKS_CLIENT_ID/SECRET, a ``~/.databrickscfg`` profile)."""

    model_config = spelt_flat("databricks_")

    host: str = Field(
        "",
        description="The workspace URL (https://<workspace>.cloud.databricks.com); empty "
        "takes the SDK's (DATABRICKS_HOST, the profile).",
    )
    workload_size: str = Field(
        "Small", description="Each served entity's workload size (Small, Medium, Large)."
    )
    workload_type: str = Field("CPU", description="Each served entity's compute (CPU, GPU_SMALL…).")
    scale_to_zero: bool = Field(
        False,
        description="Let an idle served entity scale to zero (its first call then waits for "
        "it to start: off, so a comparison measures a warm green).",
    )
    name_prefix: str = Field(
        "bgserve-",
        description="Prefix of the endpoint names bgserve creates (letters, digits, '-' and "
        "'_'; longer names than 63 characters are shortened with a digest).",
    )
    poll_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How long a change refused with 409 RESOURCE_CONFLICT (a config update "
        "of the endpoint is in progress) waits before it is tried again.",
    )
    metrics_read_seconds: float = Field(
        15.0,
        ge=0,
        le=50,
        description="How long live analysis reuses a reading of the endpoint's metrics export "
        "(its counts change once a minute; read less often than once a minute, minutes are "
        "missed).",
    )

    @field_validator("name_prefix")
    @classmethod
    def _prefix_is_a_name_start(cls, prefix: str) -> str:
        if any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in prefix):
            raise ValueError("may hold only letters, digits, '-' and '_', as endpoint names do")
        if len(prefix) > 30:
            raise ValueError("must be at most 30 characters (endpoint names are 63 at most)")
        return prefix


class VertexGroup(Group):
    """Where and how the Vertex AI backend hosts slots (``BGSERVE_VERTEX_*``): one dedicated
    endpoint per deployment, one model and deployed model per release. Credentials are never
    settings: google-auth's Application Default Credentials find them
    (GOOGLE_APPLICATION_CREDENTIALS, the metadata server, ``gcloud auth
    application-default login``)."""

    model_config = spelt_flat("vertex_")

    project: str = Field("", description="Google Cloud project of the endpoints; required.")
    location: str = Field("", description="Vertex AI region, e.g. europe-west4; required.")
    image: str = Field(
        "",
        description="The bgserve image (in Artifact Registry, readable by Vertex AI's service "
        "agent) that each model runs as `serve`; required.",
    )
    machine_type: str = Field("n1-standard-4", description="Each deployed model's machine type.")
    replica_count: int = Field(1, ge=1, description="Each deployed model's replica count.")
    name_prefix: str = Field(
        "bgserve-",
        description="Prefix of the endpoint and model ids bgserve creates (Vertex: a lowercase "
        "letter first, then lowercase letters, digits and '-', at most 63 characters; longer "
        "ids are shortened with a digest).",
    )
    api_endpoint: str = Field(
        "",
        description="host:port of the Vertex AI API when it is not Google's own (a private "
        "service connect address, a test stand-in); empty uses {location}-aiplatform."
        "googleapis.com.",
    )
    dns_scheme: str = Field(
        "https",
        description="Scheme of the dedicated endpoints' DNS names: https on Google; http only "
        "for a test stand-in on loopback.",
    )
    poll_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How often a wait polls a long-running operation (deploy, undeploy, "
        "upload), and the first wait before a throttled call (RESOURCE_EXHAUSTED) is retried.",
    )
    metrics_read_seconds: float = Field(
        15.0,
        ge=0,
        le=300,
        description="How long live analysis reuses a reading of Cloud Monitoring's counts "
        "(they change once a minute; each reading is a GetEndpoint and two ListTimeSeries "
        "calls).",
    )

    @field_validator("name_prefix")
    @classmethod
    def _prefix_is_an_id_start(cls, prefix: str) -> str:
        if not prefix or not ("a" <= prefix[0] <= "z"):
            raise ValueError("must start with a lowercase letter, as Vertex AI ids do")
        if any(not (c.islower() or c.isdigit() or c == "-") or not c.isascii() for c in prefix):
            raise ValueError("may hold only lowercase letters, digits and '-', as Vertex ids do")
        if len(prefix) > 30:
            raise ValueError("must be at most 30 characters (ids are 63 at most)")
        return prefix

    @field_validator("dns_scheme")
    @classmethod
    def _scheme(cls, scheme: str) -> str:
        if scheme not in ("https", "http"):
            raise ValueError("must be https (or http for a test stand-in)")
        return scheme
