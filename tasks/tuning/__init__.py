"""Fine-tuning the encoder on the corpus, without labels.

`pairs`: the seeded document split and the pairs mined from chunks (inverse cloze, heading ->
section, neighbours); `user_pairs`: the user's JSONL or BEIR pairs; `negatives`: hard
negatives from BM25 and the base model, outside the positive's document and duplicate group;
`train`: sentence-transformers' trainer, the planned steps in full or a time guard's error;
`gate`: base and tuned scored on held-out documents, and a paired test that decides.

Imports: `tasks.core`, `tasks.documents`, `tasks.query`, `tasks.evaluation`.
"""
