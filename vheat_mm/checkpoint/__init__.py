"""vHeat checkpoints in plain PyTorch, one module per job.

- :mod:`.io`: reading with ``torch.load`` and the restricted unpickler of
  :mod:`.restricted_pickle` (on the CPU unless told), and one line on why a file is refused
  (the global its pickle asks for, keys that are not strings, NaN or inf weights) or cannot be
  read (empty, truncated...).
- :mod:`.restricted_pickle`: the pickle module every read passes to ``torch.load``: the one
  table of the globals a checkpoint may name (:data:`ALLOWED_GLOBALS`: torch's tensors,
  mmengine's runner checkpoints, the official training code's yacs config as a plain dict),
  each with why, and an unpickler that refuses anything else, per call (no process-wide
  allowlist, safe in threads).
- :mod:`.archive`: the zip archive checked before ``torch.load``: no compressed record, none
  larger than the file, every CRC-32 right, no pickle whose shared parts nest to an
  exponential size.
- :mod:`.messages`: keys and values of a checkpoint cut to a bounded length in messages.
- :mod:`.download`: an http(s) URL is downloaded once into torch hub's checkpoint cache, as
  mmengine does, kept only if complete and readable, its sha256 recorded and checked on every
  use, then read the same way.
- :mod:`.layout`: the table of checkpoint layouts: the official one (``{'model': state_dict,
  ...}``, also ``model_ema``), mmengine's (``{'state_dict': ..., 'meta': ...}``, keys with or
  without a ``backbone.`` prefix), DeepSpeed's (``module``) and a bare state dict.
- :mod:`.convert`: pure conversions: :func:`official_to_mmpretrain` maps an official classifier to mmpretrain's
  ``ImageClassifier`` keys, :func:`convert_freq_embeds` prepares a classification checkpoint for
  a larger downstream resolution (what ``interpolate4downstream.py`` does).
- :mod:`.coverage`: what a load does (:func:`survey`: the tensors it fills, leaves missing,
  ignores, cannot take, and the freq_embeds the model resizes) and the one verdict on it
  (:func:`check_coverage`: a warning for a checkpoint that covers the model badly, an error
  under strict loading).
- :mod:`.load`: the one order of every load path (read, find the state dict, survey and judge,
  load, report): :func:`load_pretrained`, :func:`load_state_dict_checked` (mmengine's loading
  shares it) and :func:`checkpoint_filter_fn` (timm's ``pretrained_filter_fn``).
- :mod:`.atomic`: :func:`write_checkpoint` and :func:`replaced_atomically` write atomically.
"""
from .archive import check_archive
from .atomic import leftover_temporaries, replaced_atomically, write_checkpoint
from .convert import (CONVERSION_MODES, check_downstream_sizes, convert_freq_embeds,
                      official_to_mmpretrain, official_to_model)
from .coverage import (MIN_COVERAGE, LoadReport, check_coverage, log_report, strict_loading,
                       strict_loading_enabled, survey)
from .download import PRETRAINED_URLS, cached_download, is_url
from .errors import CheckpointError
from .io import check_string_keys, read_checkpoint, refuse_non_finite
from .layout import (BACKBONE_MODULE, LAYOUTS, STATE_DICT_ENTRIES, WRAPPED_MODULE, FreqEmbedKey,
                     Layout, find_freq_embeds, find_layout, find_state_dict, is_state_dict,
                     named_weight_entries, select_prefix, weight_entries)
from .load import checkpoint_filter_fn, load_pretrained, load_state_dict_checked
from .messages import shown, shown_keys
from .restricted_pickle import ALLOWED_GLOBALS, AllowedGlobal, OfficialConfig, RefusedCall

__all__ = ['ALLOWED_GLOBALS', 'BACKBONE_MODULE', 'CONVERSION_MODES', 'LAYOUTS', 'MIN_COVERAGE',
           'PRETRAINED_URLS', 'STATE_DICT_ENTRIES', 'WRAPPED_MODULE', 'AllowedGlobal',
           'CheckpointError', 'FreqEmbedKey', 'Layout', 'LoadReport', 'OfficialConfig',
           'RefusedCall', 'cached_download', 'check_archive', 'check_coverage',
           'check_downstream_sizes', 'check_string_keys', 'checkpoint_filter_fn',
           'convert_freq_embeds', 'find_freq_embeds', 'find_layout', 'find_state_dict',
           'is_state_dict', 'is_url', 'leftover_temporaries', 'load_pretrained',
           'load_state_dict_checked', 'log_report', 'named_weight_entries',
           'official_to_mmpretrain', 'official_to_model', 'read_checkpoint', 'refuse_non_finite',
           'replaced_atomically', 'select_prefix', 'shown', 'shown_keys', 'strict_loading',
           'strict_loading_enabled', 'survey', 'weight_entries', 'write_checkpoint']
