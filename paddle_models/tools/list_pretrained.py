"""List the published trained checkpoints that ``--model NAME``, ``pm.build_model(NAME, pretrained=True)`` and
``pm.Segmenter.from_pretrained(NAME)`` take: name, alias, dataset, classes and published mIoU, one line each.

    python -m paddle_models.tools.list_pretrained [--dataset Cityscapes|PascalVOC]
"""
import argparse

from paddle_models.core import cli
from paddle_models.pretrained import list_pretrained


def main(argv=None):
    parser = argparse.ArgumentParser(description='List the published trained checkpoints.')
    parser.add_argument('--dataset', default=None, choices=['Cityscapes', 'PascalVOC'],
                        help='Only the checkpoints trained on this dataset.')
    args = parser.parse_args(argv)
    entries = list_pretrained(dataset=args.dataset)
    for entry in entries:
        print(f"{entry['name']:<52} {entry['alias']:<37} {entry['dataset']:<10} {entry['num_classes']:>2} classes  "
              f"mIoU {entry['miou']:.4f}")
    return entries


if __name__ == '__main__':
    cli.main_wrapper(main)
