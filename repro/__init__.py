"""repro: reproduction of arXiv 2603.25325 (pruning vs SAE features).

Run `repro --help` for the commands; `repro all --profile tiny --out runs/tiny` runs the
whole tiny study on a CPU.
"""

__version__ = "0.1.0"
