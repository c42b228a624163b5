"""A PySpark application whose answer can be checked: the sum of i*i for
i below N, computed in PARTITIONS tasks that each take at least PAUSE
seconds (so that it is still running when a worker is preempted).

    spark-submit --master spark://ADDRESS sum_of_squares.py [N PARTITIONS PAUSE]

It prints `sum of squares below N: S (expected E)` and exits non-zero when
S is not E.
"""

import sys
import time

from pyspark.sql import SparkSession


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    partitions = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    spark = SparkSession.builder.appName("sum-of-squares").getOrCreate()

    def squares(numbers):
        time.sleep(pause)
        yield sum(i * i for i in numbers)

    total = spark.sparkContext.parallelize(range(n), partitions).mapPartitions(squares).sum()
    expected = (n - 1) * n * (2 * n - 1) // 6
    print(f"sum of squares below {n}: {total} (expected {expected})", flush=True)
    spark.stop()
    sys.exit(0 if total == expected else 1)


if __name__ == "__main__":
    main()
