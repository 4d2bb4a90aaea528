"""fewshot: does the optimizer that fits a few-shot classifier matter?"""
__version__ = "0.1.0"
