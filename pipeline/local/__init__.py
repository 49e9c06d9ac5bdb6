"""The local runtime: runs the pipeline definition on one machine, with its state in SQLite.

Three parts, each a sub-package: ``engine`` runs a definition, ``state`` is what is recorded (SQLite
and the artifact store), ``services`` stand in for SageMaker hosting and Runtime, EventBridge and
API Gateway. The root keeps only what all three share: ``aws_identity`` and ``processes``.
"""
