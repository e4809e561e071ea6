"""Datasets: the embedded default (SyntheticShapes), CamVid, the checked generic list-file Dataset and PaddleSeg's
named datasets (Cityscapes, ADE20K, PascalVOC, PPHumanSeg14K, MiniDeepGlobeRoadExtraction) in their layouts.

Importing this package registers them in PaddleSeg's dataset manager; ``Dataset`` replaces PaddleSeg's generic one.
"""
from .list_dataset import Dataset, check_label_values, load_image, load_label, read_list_file, resolve_list_path
from .synthetic import SyntheticShapes
from .camvid import CamVid
from .paddleseg_layouts import ADE20K, Cityscapes, MiniDeepGlobeRoadExtraction, PascalVOC, PPHumanSeg14K

__all__ = ['Dataset', 'SyntheticShapes', 'CamVid', 'Cityscapes', 'ADE20K', 'PascalVOC', 'PPHumanSeg14K',
           'MiniDeepGlobeRoadExtraction', 'check_label_values', 'load_image', 'load_label',
           'read_list_file', 'resolve_list_path']
