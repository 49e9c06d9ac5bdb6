"""The container images the jobs and the endpoint run, and the instance types a registered model
says it runs on (which follow from the inference image)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.parameters import DEFAULT_PROCESSING_INSTANCE_TYPE, DEFAULT_TRAINING_INSTANCE_TYPE
from pipeline.settings import DEFAULT_ENDPOINT_INSTANCE_TYPE, Settings

# What a registered package says it runs on, by the processor its inference image is built for:
# the CPU image cannot use a GPU instance's accelerator, and the GPU image needs one.
# The first inference type is the one the SDK's ModelBuilder is given: the endpoint's default.
INSTANCE_TYPES = {
    "cpu": {"inference": [DEFAULT_ENDPOINT_INSTANCE_TYPE, "ml.m5.xlarge"], "transform": ["ml.m5.xlarge"]},
    "gpu": {"inference": ["ml.g4dn.xlarge"], "transform": ["ml.g4dn.xlarge"]},
}


@dataclass(frozen=True)
class Images:
    """The container images: PyTorch DLCs for processing, training (GPU) and inference."""

    processing: str
    training: str
    inference: str


def resolve_images(settings: Settings) -> Images:
    """Image URIs from the SDK's bundled image table (offline), unless the settings pin them.

    Processing runs on the CPU training image (as the SDK's PyTorch FrameworkProcessor does);
    training uses the GPU image, matching the default GPU instance type; the endpoint uses the
    CPU inference image, which also serves the model on a GPU-less instance. The registered
    package lists the instance types of the inference image in use (``supported_instance_types``).
    """
    from sagemaker.core import image_uris

    def retrieve(scope: str, instance_type: str) -> str:
        return image_uris.retrieve("pytorch", region=settings.region, version=settings.framework_version,
                                   py_version=settings.py_version, instance_type=instance_type, image_scope=scope)

    return Images(
        processing=settings.processing_image_uri or retrieve("training", DEFAULT_PROCESSING_INSTANCE_TYPE),
        training=settings.training_image_uri or retrieve("training", DEFAULT_TRAINING_INSTANCE_TYPE),
        inference=settings.inference_image_uri or retrieve("inference", DEFAULT_ENDPOINT_INSTANCE_TYPE),
    )


def container_torch_version(settings: Settings) -> str:
    """The torch release the training and inference images of ``settings.framework_version``
    ship ("2.5" → "2.5.1"), from the SDK's image table: the one source of the framework
    version, for the image URIs and for the test tier that runs the code on that torch
    (scripts/containers_tier.sh). ValueError if the two images' releases differ."""
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework("pytorch")
    releases = set()
    for scope in ("training", "inference"):
        release = config[scope]["version_aliases"].get(settings.framework_version, settings.framework_version)
        if release not in config[scope]["versions"]:
            raise ValueError(f"the SageMaker SDK knows no PyTorch {settings.framework_version} {scope} image; set "
                             "SENTIMENT_MLOPS_FRAMEWORK_VERSION to a version with training and inference images")
        releases.add(release)
    if len(releases) != 1:
        raise ValueError(f"the PyTorch {settings.framework_version} training and inference images ship different "
                         f"torch releases ({', '.join(sorted(releases))}); choose a framework version they share")
    return releases.pop()


def image_processor(image_uri: str) -> str:
    """``gpu`` or ``cpu``: what a Deep Learning Container is built for, read from its tag
    (``pytorch-inference:2.5-gpu-py311``). An image pinned by digest, or with a tag that does not
    say, counts as CPU, which is what ``resolve_images`` picks for inference."""
    name = image_uri.rsplit("/", 1)[-1]
    tag = name.partition(":")[2] if "@" not in name else ""
    return "gpu" if "-gpu-" in f"-{tag}-" else "cpu"


def supported_instance_types(image_uri: str) -> dict[str, list[str]]:
    """``{"inference": [...], "transform": [...]}`` that a model package serving ``image_uri``
    registers: only instances that image can run on (``INSTANCE_TYPES``)."""
    return INSTANCE_TYPES[image_processor(image_uri)]
