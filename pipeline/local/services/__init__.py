"""The services: local stand-ins for SageMaker hosting, SageMaker Runtime, EventBridge and API
Gateway + Lambda. They may import ``pipeline.local.state`` and the shared root modules, never the engine."""
