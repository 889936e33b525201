# PyTorch's own profile of a ResNet-18 training step (batch 32, 3x224x224, Adam, 2 threads), as
# `vitrine bench --model resnet18` trains it: `BENCH_PYTHON docs/results/cpu/2026-12-05-afternoon/profile_pytorch_resnet18.py`.
import torch, torchvision, time
torch.set_num_threads(2)
m = torchvision.models.resnet18(num_classes=10)
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = torch.randn(32, 3, 224, 224); y = torch.randint(0, 10, (32,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(2): step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    for _ in range(3): step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
