"""Fine-tuning the encoder on the corpus: pairs mined without labels, hard negatives, training
with sentence-transformers' trainer, and the held-out gate that decides whether it is used."""
