"""``python -m tasks <stage> [--algo A --method M]``: one stage of the pipeline, as ``dvc repro`` runs it."""

from tasks.common import stage_main

if __name__ == "__main__":
    stage_main()
