"""mC4 span corruption over its 101 languages, mixed as in mT5 (Xue et al. 2021).

One task per language code of TFDS's ``c4/multilingual`` config (``MC4_LANGUAGES``: 107 codes,
the 101 languages plus six romanised variants such as ``ru-Latn``, all used by mT5), each with
mT5's vocabulary and T5's span corruption, and a mixture sampling language ``l`` at a rate
proportional to ``n_l ** 0.3`` (``tasks.mixing``), ``n_l`` being its number of training examples.

Version: mT5 read ``c4/multilingual:3.0.1``; the installed TFDS (4.9.2) builds and reads only
3.1.0 (its newest; 3.1.0 changed URL de-duplication to keep the newest page and escapes badword
regexes), so that is the version registered here. TFDS's per-language splits are ``{lang}`` and
``{lang}-validation``. The data must be prepared beforehand; registering never touches it, and the
mixture's rates read the example counts from TFDS's dataset info only when the mixture is used.
"""

from typing import Optional, Sequence

import seqio
import tensorflow_datasets as tfds

from tasks import mixing, registry
from tasks import objectives as objectives_lib
from tasks import vocab as vocab_lib

MC4_TFDS_NAME = "c4/multilingual:3.1.0"
MC4_LANGUAGES = tuple(tfds.text.c4.MC4_LANGUAGES)
TASK_PREFIX = "switch_mc4"
MIXTURE_NAME = "switch_mc4_span_corruption"


def language_task_name(language: str, prefix: str = TASK_PREFIX) -> str:
  """``switch_mc4_ru_Latn`` for ``ru-Latn``: seqio names do not allow '-'."""
  return f"{prefix}_{language.replace('-', '_')}"


def mc4_source(language: str, tfds_name: str = MC4_TFDS_NAME,
               tfds_data_dir: Optional[str] = None) -> seqio.TfdsDataSource:
  """One language of mC4 with canonical split names ``train`` and ``validation``."""
  return seqio.TfdsDataSource(
      tfds_name=tfds_name, tfds_data_dir=tfds_data_dir,
      splits={"train": language, "validation": f"{language}-validation"})


def register_mc4(vocabulary=None, languages: Sequence[str] = MC4_LANGUAGES, *,
                 alpha: float = mixing.MT5_ALPHA, prefix: str = TASK_PREFIX,
                 mixture_name: str = MIXTURE_NAME, tfds_name: str = MC4_TFDS_NAME,
                 tfds_data_dir: Optional[str] = None, replace: bool = True) -> seqio.Mixture:
  """Registers one span-corruption task per language and their temperature-sampled mixture.

  Args:
    vocabulary: a seqio.Vocabulary or ``.model`` path; default mT5's (loaded lazily).
    languages: mC4 language codes (default: all of TFDS's MC4_LANGUAGES).
    alpha: mixing exponent (rate proportional to examples ** alpha); mT5's 0.3 by default.
    prefix: task name prefix (tasks are ``{prefix}_{language}``).
    mixture_name: the mixture's name.
    tfds_name: TFDS name and version of mC4.
    tfds_data_dir: TFDS data directory holding the prepared dataset (default: TFDS's).
    replace: replace tasks and mixture already registered under these names (else keep them).

  Returns:
    The registered mixture.
  """
  unknown = sorted(set(languages) - set(MC4_LANGUAGES))
  if unknown:
    raise ValueError(f"Not mC4 languages: {unknown}; see tfds.text.c4.MC4_LANGUAGES")
  vocabulary = vocab_lib.mt5_vocabulary() if vocabulary is None else vocabulary
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  features = objectives_lib.output_features(vocabulary, objectives_lib.SPAN_CORRUPTION)
  names = []
  for language in languages:
    name = language_task_name(language, prefix)
    registry.add_task(
        name, replace=replace, source=mc4_source(language, tfds_name, tfds_data_dir),
        output_features=features,
        preprocessors=objectives_lib.text_preprocessors(objectives_lib.SPAN_CORRUPTION),
        metric_fns=[])
    names.append(name)
  return registry.add_mixture(mixture_name, names, default_rate=mixing.temperature_rate_fn(alpha),
                              replace=replace)
