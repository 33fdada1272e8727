"""PyTorch Geometric side of the GAT training benchmark (see BENCHMARKS.md).

Loads the batch and initial weights that `kdgat_bench train-gat --dump FILE` wrote, builds the
teacher GAT of spec §4.2 with PyG's GATConv (the layout [O1]'s GATWithJK uses), loads the
weights with strict=True (so it also checks that kdbuild's tensor names and layouts are
PyTorch/PyG's), and times the same training pass: forward in train mode (dropout), class-
weighted CE, backward (no optimizer step, so the weights and the cost stay fixed).

usage: python benches/pyg_gat_train.py FILE [--threads N] [--iters 30] [--check-forward]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch_geometric
import torch.nn.functional as F
from safetensors.torch import load_file
from torch_geometric.nn import GATConv, global_mean_pool


class GATWithJK(nn.Module):
    def __init__(self, num_ids, emb=16, layers=3, heads=8, ch=48, fc=1, p=0.2):
        super().__init__()
        self.id_embedding = nn.Embedding(num_ids, emb)
        self.convs = nn.ModuleList(
            GATConv(emb + 10 if i == 0 else heads * ch, ch, heads=heads, concat=True)
            for i in range(layers)
        )
        d = layers * heads * ch
        mods = []
        for _ in range(fc - 1):
            mods += [nn.Linear(d, d), nn.ReLU(), nn.Dropout(p)]
        mods.append(nn.Linear(d, 2))
        self.fc_layers = nn.ModuleList(mods)
        self.p = p

    def forward(self, x, edge_index, batch):
        h = torch.cat([self.id_embedding(x[:, 0].long()), x[:, 1:]], dim=1)
        xs = []
        for conv in self.convs:
            h = F.dropout(conv(h, edge_index).relu(), p=self.p, training=self.training)
            xs.append(h)
        g = global_mean_pool(torch.cat(xs, dim=1), batch)
        for m in self.fc_layers:
            g = m(g)
        return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--check-forward", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = load_file(a.file)
    x, ei, batch, y = t["x"], t["edge_index"], t["batch"], t["y"]
    weights = {k[len("model."):]: v for k, v in t.items() if k.startswith("model.")}
    num_ids = weights["id_embedding.weight"].shape[0]
    model = GATWithJK(num_ids)
    model.load_state_dict(weights, strict=True)
    if a.check_forward:
        model.eval()
        with torch.no_grad():
            print("eval logits[:3]", model(x, ei, batch)[:3].tolist())
    model.train()
    n1 = int(y.sum())
    n0 = len(y) - n1
    w = torch.tensor([(n0 + n1) / (2 * n0), (n0 + n1) / (2 * n1)])

    def step():
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, ei, batch), y, weight=w)
        loss.backward()
        return loss.item()

    for _ in range(3):
        step()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(a.iters):
        step()
    dt = (time.perf_counter() - t0) / a.iters
    cpu = (time.process_time() - c0) / a.iters
    print(
        f"PyG {torch_geometric.__version__} (torch {torch.__version__}) teacher GAT forward+backward ({a.threads} threads): batch {len(y)} graphs, "
        f"{x.shape[0]} nodes, {ei.shape[1]} window edges: {dt*1e3:.1f} ms/step wall "
        f"({len(y)/dt:.0f} graphs/s), {cpu*1e3:.1f} ms/step CPU"
    )


if __name__ == "__main__":
    main()
