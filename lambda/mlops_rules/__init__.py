"""The rules both sides of the Lambda boundary follow: the CLI, the local runtime and the
SageMaker backend on one side, the deploy, retrain and predict functions on the other.

Standard library only, so that a Lambda function runs it without the project: it lives in
``lambda/``, each function's code root, which the template packages whole into every function
(``CodeUri: .``), and setup.py installs the same folder as the package ``mlops_rules`` for the
rest of the project. One home for each rule: a change here changes both sides at once.
"""
