"""The zero-shot evaluation suite of the GPT-2 paper (section 3) and GPT-1's zero-shot heuristics.

    detokenize          invertible de-tokenizers (WikiText, PTB, CBT, LAMBADA, 1BW)
    datasets            canonical files: where to find or download them, checks, loaders
    metrics             SQuAD F1 / EM, ROUGE (rouge-score), BLEU (sacrebleu), MCC
    scoring             batched, cache-sharing log-likelihood scoring (`Scorer`)
    language_modeling   WikiText-2/-103, PTB, 1BW, enwik8, text8
    cloze               LAMBADA, CBT, WSC273; SST-2, CoLA, RACE, Story Cloze
    generation          CoQA, CNN / Daily Mail, WMT-14, Natural Questions
    tasks               the task table and what tasks receive and return
    run                 `gpt2 eval`: run tasks with caching, write results.json + report.md
    report              `gpt2 report`: Table 3 layout and Figure-1 / Figure-4 style plots

Definitions follow EVAL_SPEC.md; docs/evaluation.md describes commands and file formats.
"""
