"""Command line: train a T5-style SentencePiece vocabulary on text files.

    python -m tasks.build_vocab --input corpus_a.txt corpus_b.txt \\
        --output_prefix /tmp/vocab/spm --vocab_size 8000

Inputs are UTF-8, one document per line; every 20th line (the validation split of the tasks,
see ``tasks.lines``) is left out of training. Writes ``{output_prefix}.model`` and ``.vocab``.
Use the model with ``tasks.register_text_file_task(..., vocabulary="/tmp/vocab/spm.model")``.
"""

import argparse
import sys
import time
from typing import Optional, Sequence

from tasks import lines as lines_lib
from tasks import vocab as vocab_lib


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m tasks.build_vocab", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True, nargs="+", action="extend",
                      help="UTF-8 text files, one document per line (repeatable)")
  parser.add_argument("--output_prefix", required=True,
                      help="writes OUTPUT_PREFIX.model and OUTPUT_PREFIX.vocab")
  parser.add_argument("--vocab_size", required=True, type=int,
                      help="number of pieces, including pad/eos/unk (100 sentinels come on top)")
  parser.add_argument("--model_type", default="unigram",
                      choices=("unigram", "bpe", "char", "word"))
  parser.add_argument("--character_coverage", type=float, default=1.0,
                      help="1.0 for small alphabets; 0.9995 for Chinese or Japanese text")
  parser.add_argument("--holdout_every", type=int, default=lines_lib.HOLDOUT_EVERY,
                      help="leave out every Nth line (the tasks' validation split)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  start = time.perf_counter()
  try:
    stats = lines_lib.scan_text_files(args.input, args.holdout_every)
    model_path = vocab_lib.train_sentencepiece(
        args.input, args.output_prefix, args.vocab_size, model_type=args.model_type,
        character_coverage=args.character_coverage, holdout_every=args.holdout_every)
  except (OSError, ValueError) as e:
    print(f"build_vocab: error: {e}", file=sys.stderr)
    return 1
  documents = sum(s.train_documents for s in stats)
  pieces = vocab_lib.piece_count(model_path)  # the model's own count, not the request
  print(f"wrote {model_path} ({pieces} pieces) from {documents} training documents "
        f"of {len(stats)} file(s) in {time.perf_counter() - start:.1f}s")
  if pieces != args.vocab_size:
    print(f"build_vocab: note: --vocab_size {args.vocab_size} asked for {args.vocab_size} pieces; "
          f"the {args.model_type} model has {pieces} (a char model has one per distinct "
          "character of the text, plus pad, eos and unk)", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
