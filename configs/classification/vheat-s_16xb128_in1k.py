_base_ = './vheat-t_16xb128_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3), head=dict(in_channels=768))
