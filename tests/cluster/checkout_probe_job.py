"""A tiny Spark job for tests/cluster: each task tries to read a file of the checkout by its absolute
path and reports what happened, where it ran and what it sees at the checkout's path; printed as one
JSON line. Run by the project's interpreter as the driver:

    python tests/cluster/checkout_probe_job.py SPARK_MASTER FILE EXECUTOR_PYTHON

The function runs on the executors by value (it is defined in __main__), so they need nothing of
the checkout. EXECUTOR_PYTHON is an interpreter outside the checkout (the venv is inside it).
"""
import json
import sys

from pyspark import SparkConf, SparkContext


def probe(path: str, root: str):
    import os
    import socket

    def attempt(_index):
        try:
            with open(path, "rb") as handle:
                outcome = f"read {len(handle.read())} bytes"
        except Exception as exc:  # noqa: BLE001 - the type is the answer
            outcome = type(exc).__name__
        try:
            seen = sorted(os.listdir(root))
        except Exception as exc:  # noqa: BLE001
            seen = type(exc).__name__
        return {"outcome": outcome, "root_entries": seen, "cwd": os.getcwd(), "pid": os.getpid(),
                "host": os.environ.get("SPARK_LOCAL_IP", socket.gethostname()), "python": sys.executable}

    return attempt


def main() -> None:
    master, path, python = sys.argv[1:4]
    root = str(__import__("pathlib").Path(path).parent)
    conf = (SparkConf().setMaster(master).setAppName("smw-cluster-checkout-probe")
            .set("spark.pyspark.python", python)
            .set("spark.executor.memory", "512m").set("spark.cores.max", "2")
            .set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1")
            .set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false"))
    context = SparkContext(conf=conf)
    context.setLogLevel("ERROR")
    try:
        results = context.parallelize(range(4), 4).map(probe(path, root)).collect()
    finally:
        context.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
