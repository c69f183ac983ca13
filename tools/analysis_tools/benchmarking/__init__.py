"""Code shared by the benchmark tools beside this package (benchmark.py, kernel_ablation.py,
dct_methods.py), which import it as ``benchmarking`` from their own folder.

- :mod:`.measure`: the timer, interleaved rounds and peak memory (all three tools);
- :mod:`.cases`: benchmark.py's case grammar and the archs it names;
- :mod:`.official`: importing the official vHeat code from a checkout;
- :mod:`.competitors`: the models vheat_mm is compared with (the official code, Swin);
- :mod:`.import_order`: the order in which vheat_mm and the official code are imported.
"""
