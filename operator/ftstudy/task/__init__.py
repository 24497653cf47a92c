"""The product-attribute extraction task: synthetic pages, the JSONL schema, preprocessing and scoring.

Nothing here imports torch, so the operator and the report tools can score and read data without the model stack.
"""
