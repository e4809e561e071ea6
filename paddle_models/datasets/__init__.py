"""Datasets: the embedded default (SyntheticShapes), CamVid, and the checked generic list-file Dataset.

Importing this package registers them in PaddleSeg's dataset manager; ``Dataset`` replaces PaddleSeg's generic one.
"""
from .list_dataset import Dataset, check_label_values, load_image, load_label, read_list_file, resolve_list_path
from .synthetic import SyntheticShapes
from .camvid import CamVid

__all__ = ['Dataset', 'SyntheticShapes', 'CamVid', 'check_label_values', 'load_image', 'load_label',
           'read_list_file', 'resolve_list_path']
