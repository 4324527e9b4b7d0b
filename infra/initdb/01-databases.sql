-- databases of the team stack (the same names `curate stack up` creates)
CREATE DATABASE curate_prefect;
CREATE DATABASE curate_mlflow;
