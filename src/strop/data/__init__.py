"""Reading, checking and splitting labelled data."""

from strop.data.tables import read_table
from strop.data.labelled import LabelledTexts, load_labelled_texts, split_stratified

__all__ = ["read_table", "LabelledTexts", "load_labelled_texts", "split_stratified"]
