"""The Kubeflow pipeline of vlpeft: the DAG (``vlpeft_pipeline``), compile and submit (``compile``)."""
