"""The reading: one definition for every part of the platform.

A reading is one power sample of one meter (a REDD channel) of one house:

| field     | type    | meaning                                                  |
|-----------|---------|----------------------------------------------------------|
| house_id  | string  | house identifier; the Kafka key                          |
| meter     | int32   | channel number within the house (labels repeat, so never |
|           |         | key by label)                                            |
| label     | string  | raw label as the source spells it (REDD typos kept)      |
| appliance | string  | normalised appliance name                                |
| ts_s      | float64 | UTC epoch seconds, fractional allowed                    |
| power_w   | float64 | watts, negative when exporting                           |

The raw zone adds `date`, the UTC date of `ts_s` (the partition column; see
docs/landing.md and docs/datasets.md).
"""
from __future__ import annotations

import pyarrow as pa

FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("house_id", pa.string()),
    ("meter", pa.int32()),
    ("label", pa.string()),
    ("appliance", pa.string()),
    ("ts_s", pa.float64()),
    ("power_w", pa.float64()),
)
NAMES = tuple(name for name, _ in FIELDS)

READING_ARROW = pa.schema([pa.field(name, dtype, nullable=False) for name, dtype in FIELDS])

# The raw zone's readings: the reading columns and their UTC date (the partition column).
RAW_COLUMNS = NAMES + ("date",)
# A quarantined record, kept whole: Kafka key and value bytes, where it came from, the Kafka
# timestamp, the first contract rule it broke, and the date of its Kafka timestamp.
QUARANTINE_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_ts", "error", "date")


def reading_spark_schema():
    """The reading schema as a pyspark StructType (pyspark is imported lazily, so that
    processes without it, the web app and the producers, can import this module)."""
    from pyspark.sql import types as T

    spark_type = {pa.string(): T.StringType(), pa.int32(): T.IntegerType(), pa.float64(): T.DoubleType()}
    return T.StructType([T.StructField(name, spark_type[dtype], nullable=False) for name, dtype in FIELDS])
