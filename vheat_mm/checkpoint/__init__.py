"""vHeat checkpoints in plain PyTorch: safe reading, downloads, layouts, conversion, writing."""
from .io import (CONVERSION_MODES, FREQ_EMBED_ENTRIES, PRETRAINED_URLS, STATE_DICT_ENTRIES,
                 CheckpointError, FreqEmbedKey, LoadReport, cached_download,
                 check_downstream_sizes, checkpoint_filter_fn, convert_freq_embeds,
                 find_freq_embeds, find_state_dict, is_url, leftover_temporaries,
                 load_pretrained, official_to_mmpretrain, read_checkpoint, replaced_atomically,
                 select_prefix, write_checkpoint)

__all__ = ['CONVERSION_MODES', 'FREQ_EMBED_ENTRIES', 'PRETRAINED_URLS', 'STATE_DICT_ENTRIES',
           'CheckpointError', 'FreqEmbedKey', 'LoadReport', 'cached_download',
           'check_downstream_sizes', 'checkpoint_filter_fn', 'convert_freq_embeds',
           'find_freq_embeds', 'find_state_dict', 'is_url', 'leftover_temporaries',
           'load_pretrained', 'official_to_mmpretrain', 'read_checkpoint', 'replaced_atomically',
           'select_prefix', 'write_checkpoint']
