"""The start of a stand-in for ``python -m tasks <stage>`` (the runner tests write the rest): its command line."""

ARGS = """
import argparse, json, os, sys
from pathlib import Path
ap = argparse.ArgumentParser()
ap.add_argument("stage"); ap.add_argument("--workdir"); ap.add_argument("--params"); ap.add_argument("--profile")
ap.add_argument("--set", action="append", default=[]); ap.add_argument("--algo"); ap.add_argument("--method")
ap.add_argument("--no-mlflow", action="store_true")
a = ap.parse_args()
"""
