"""Reading, checking and splitting data: tables, CoNLL files, inputs and splits."""

from strop.data.tables import read_table

__all__ = ["read_table"]
