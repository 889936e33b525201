#!/usr/bin/env python3
"""The reference networks of reference-models.md in PyTorch, timed the way `vitrine bench` times
Vitrine's: random inputs of the same shapes, a training step = forward, loss, backward and an
optimizer step of the same optimizer, inference = a forward pass in eval mode (recommenders: every
customer's top 10 over all items, their training items left out); untimed warm-up steps, then up to --steps timed ones. Prints one JSON object per line, as `vitrine bench --json` does.

    python3 scripts/bench_pytorch.py --model fashion-cnn --threads 2 [--batch-size 128] [--seq-len 64]

Called by scripts/bench-vs-pytorch.sh, which interleaves it with `vitrine bench`.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class FashionCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.conv4, self.bn4 = nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.dropout = nn.Dropout(0.25)
        self.fc1, self.fc2 = nn.Linear(3136, 256), nn.Linear(256, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(F.relu(self.bn4(self.conv4(x))), 2)
        x = F.relu(self.fc1(self.dropout(torch.flatten(x, 1))))
        return self.fc2(self.dropout(x))


class BasicBlock(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.shortcut = None
        if stride != 1 or i != o:
            self.shortcut = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResnetSmall(nn.Module):
    def __init__(self, classes=10, w=32):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
        plan = [(w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        self.blocks = nn.Sequential(*[BasicBlock(i, o, s) for i, o, s in plan])
        self.dropout, self.fc = nn.Dropout(0.25), nn.Linear(4 * w, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem_bn(self.stem(x))))
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


class TextRnnAttn(nn.Module):
    """text-lstm-attn / text-gru-attn: embedding, bidirectional LSTM/GRU (packed, so padding is
    skipped as Vitrine's masked recurrence skips it), additive attention pooling."""

    def __init__(self, vocab=8000, cell="lstm", classes=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 128)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(128, 128, batch_first=True, bidirectional=True)
        self.projection, self.score = nn.Linear(256, 128), nn.Linear(128, 1, bias=False)
        self.dropout, self.output = nn.Dropout(0.3), nn.Linear(256, classes)

    def forward(self, ids, mask):
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=ids.shape[1])
        scores = self.score(torch.tanh(self.projection(h))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(mask == 0, -1e9), dim=1)
        return self.output(self.dropout((weights.unsqueeze(-1) * h).sum(1)))


class ConvAE(nn.Module):
    def __init__(self, latent=32):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1)
        self.fc_mu, self.fc_decode = nn.Linear(3136, latent), nn.Linear(latent, 3136)
        self.deconv1, self.deconv2 = nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ConvTranspose2d(32, 1, 4, 2, 1)

    def forward(self, x):
        z = self.fc_mu(torch.flatten(F.relu(self.conv2(F.relu(self.conv1(x)))), 1))
        x = F.relu(self.fc_decode(z)).view(-1, 64, 7, 7)
        return torch.sigmoid(self.deconv2(F.relu(self.deconv1(x))))


class Generator(nn.Module):
    def __init__(self, latent=64):
        super().__init__()
        self.fc, self.bn0 = nn.Linear(latent, 6272), nn.BatchNorm1d(6272)
        self.deconv1, self.bn1 = nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64)
        self.deconv2 = nn.ConvTranspose2d(64, 1, 4, 2, 1)

    def forward(self, z):
        x = F.relu(self.bn0(self.fc(z))).view(-1, 128, 7, 7)
        return torch.tanh(self.deconv2(F.relu(self.bn1(self.deconv1(x)))))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.bn2 = nn.Conv2d(1, 64, 4, 2, 1), nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128)
        self.fc = nn.Linear(6272, 1)

    def forward(self, x):
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)
        return self.fc(torch.flatten(x, 1)).squeeze(1)


class BPRMF(nn.Module):
    def __init__(self, users, items, dim=64):
        super().__init__()
        self.user, self.item = nn.Embedding(users, dim), nn.Embedding(items, dim)
        nn.init.xavier_normal_(self.user.weight)
        nn.init.xavier_normal_(self.item.weight)


class NeuMF(nn.Module):
    """Vitrine's `neumf` (RecBole's NeuMF): GMF and an MLP (dropout before each layer, ReLU) on
    separate embeddings (N(0, 0.01)), joined by one linear layer."""

    def __init__(self, users, items, dim=64, hidden=(128, 64), dropout=0.1):
        super().__init__()
        self.user_mf, self.item_mf = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.user_mlp, self.item_mlp = nn.Embedding(users, dim), nn.Embedding(items, dim)
        for e in (self.user_mf, self.item_mf, self.user_mlp, self.item_mlp):
            nn.init.normal_(e.weight, 0.0, 0.01)
        widths = [2 * dim, *hidden]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout, self.predict = nn.Dropout(dropout), nn.Linear(dim + widths[-1], 1)

    def forward(self, u, i):
        h = torch.cat([self.user_mlp(u), self.item_mlp(i)], 1)
        for layer in self.mlp:
            h = F.relu(layer(self.dropout(h)))
        return self.predict(torch.cat([self.user_mf(u) * self.item_mf(i), h], 1)).squeeze(1)

    def scores(self, u):
        """Every item for customers `u`, the first MLP layer split into a customer half and an
        item half as Vitrine's ranking does (the same arithmetic as scoring each pair)."""
        d, w, first = self.user_mf.embedding_dim, self.predict.weight[0], self.mlp[0]
        gmf = (self.user_mf(u) * w[:d]) @ self.item_mf.weight.T
        user_half, item_half = self.user_mlp(u) @ first.weight[:, :d].T, self.item_mlp.weight @ first.weight[:, d:].T
        h = F.relu(user_half[:, None, :] + item_half[None, :, :] + first.bias).reshape(-1, first.out_features)
        for layer in self.mlp[1:]:
            h = F.relu(layer(h))
        return gmf + (h @ w[d:]).reshape(len(u), -1) + self.predict.bias


class SASRec(nn.Module):
    """Vitrine's `sasrec` (RecBole's SASRec): item and position embeddings, LayerNorm (ε 1e-12)
    and dropout, a causal post-norm Transformer encoder with GELU, N(0, 0.02) weights; the item
    table (row 0 padding) scores the next item at every position."""

    def __init__(self, items, dim=64, max_len=50, layers=2, heads=2, feed_forward=256, dropout=0.1):
        super().__init__()
        self.item, self.position = nn.Embedding(items + 1, dim), nn.Embedding(max_len, dim)
        self.norm, self.dropout = nn.LayerNorm(dim, eps=1e-12), nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, feed_forward, dropout, activation="gelu", layer_norm_eps=1e-12, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, ids):
        b, n = ids.shape
        x = self.dropout(self.norm(self.item(ids) + self.position(torch.arange(n).expand(b, n))))
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)  # True: not attended, like the padding mask
        return self.encoder(x, mask=causal, src_key_padding_mask=ids == 0, is_causal=True)  # [b, n, d]

    def items(self):
        return self.item.weight[1:]


class Tower(nn.Module):
    """One tower of Vitrine's `two-tower`: an N(0, 0.05) ID embedding, beside the mean embedding
    of the entity's feature tokens when it has them (their sum over their count + 1, padding
    masked), dropout before each layer of [inputs → 128 → 64 → 64] with ReLU between, the output
    scaled to unit length."""

    def __init__(self, ids, vocabulary=None, dim=64, hidden=(128, 64), dropout=0.1):
        super().__init__()
        self.id = nn.Embedding(ids, dim)
        self.tokens = nn.Embedding(vocabulary + 1, dim) if vocabulary else None  # + padding
        for e in (self.id, self.tokens):
            if e is not None:
                nn.init.normal_(e.weight, 0.0, 0.05)
        widths = [dim * (2 if vocabulary else 1), *hidden, dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids, features=None, keep_id=None):
        h = self.id(ids) if keep_id is None else self.id(ids) * keep_id
        if features is not None:
            tokens, mask = features[0][ids], features[1][ids]
            mean = (self.tokens(tokens) * mask[:, :, None]).sum(1) / (mask.sum(1, keepdim=True) + 1)
            h = torch.cat([h, mean], 1)
        for k, layer in enumerate(self.layers):
            h = layer(self.dropout(h))
            if k < len(self.layers) - 1:
                h = F.relu(h)
        return h / (h.norm(dim=1, keepdim=True) + 1e-6)


class TwoTower(nn.Module):
    """Vitrine's `two-tower` as `vitrine bench` builds it: customers by ID, items by ID and
    genres (`features`: token ids and mask per item), temperature 0.1."""

    def __init__(self, users, items, features, vocabulary, temperature=0.1):
        super().__init__()
        self.user, self.item = Tower(users), Tower(items, vocabulary)
        self.features, self.temperature = features, temperature

    def items(self, ids, keep_id=None):
        return self.item(ids, self.features, keep_id)

    def scores(self, u):
        return self.user(u) @ self.items(torch.arange(self.item.id.num_embeddings)).T / self.temperature


def ranking(scores_of, users, items, dev, customers=None):
    """A call that ranks every item for `customers` customers (default every one) and keeps each
    one's top 10, leaving known items out as Vitrine and RecBole do: 80,000 drawn (customer, item)
    pairs set to -inf, as RecBole's full-sort evaluation does. Returns it and the customers per call."""
    g = torch.Generator(device=dev).manual_seed(0)
    seen_u, seen_i = torch.randint(0, users, (80_000,), generator=g), torch.randint(0, items, (80_000,), generator=g)
    batch = torch.arange(customers or users)
    inside = seen_u < len(batch)
    seen_u, seen_i = seen_u[inside], seen_i[inside]

    def rank():
        scores = scores_of(batch)
        scores[seen_u, seen_i] = float("-inf")
        return scores.topk(10, dim=1)

    return rank, len(batch)


def rate(step, warmup, steps, seconds, sync=lambda: None):
    """Steps per second after `warmup` untimed steps: up to `steps` timed ones, stopping after
    `seconds` (at least two), as `vitrine bench` times (vitrine_core::bench::Timing::rate). On a
    GPU each step waits for its result (`sync`), as `vitrine bench` reads each step's loss back."""
    for _ in range(warmup):
        step()
        sync()
    started, done = time.perf_counter(), 0
    while done < steps and (done < 2 or time.perf_counter() - started < seconds):
        step()
        sync()
        done += 1
    return done / (time.perf_counter() - started)


# Recommenders: inference is ranking every item for a batch of customers (`ranking`).
RECOMMENDERS = ("bpr-mf", "neumf", "two-tower", "sasrec")

# Vitrine's names for torchvision's constructors (vitrine bench uses 3×224×224, batch 32).
TORCHVISION = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenet-v3-large": "mobilenet_v3_large"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU comparison")
    p.add_argument("--rank-only", action="store_true", help="recommenders: time the ranking alone (training untimed, null)")
    p.add_argument("--rank-customers", type=int, help="recommenders: customers ranked per inference call (1: one customer's ranking, as serving does)")
    a = p.parse_args()
    if (a.rank_only or a.rank_customers) and a.model not in RECOMMENDERS:
        raise SystemExit(f"--rank-only and --rank-customers apply to the recommenders ({', '.join(RECOMMENDERS)}), not to {a.model}")
    torch.set_num_threads(a.threads)
    # As `vitrine` does on its CPU threads (vitrine_core::backend::flush_subnormals_to_zero).
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # What a PyTorch user on a GPU runs: cuDNN picks its fastest kernels (as burn autotunes).
    torch.backends.cudnn.benchmark = cuda
    torch.set_default_device(dev)
    m = a.model
    text = m.startswith("text-")
    bs = a.batch_size or (64 if text else 256 if m == "sasrec" else 2048 if m in RECOMMENDERS else 32 if m in TORCHVISION else 128)
    adam = lambda params, lr=1e-3, betas=(0.9, 0.999): torch.optim.Adam(params, lr=lr, betas=betas)
    if m in ("fashion-cnn", "resnet-small", "conv-ae") or m in TORCHVISION:
        if m in TORCHVISION:
            import torchvision  # only these cases need it

            net = getattr(torchvision.models, TORCHVISION[m])(num_classes=10)
            x = torch.rand(bs, 3, 224, 224)
        else:
            net = {"fashion-cnn": FashionCNN, "resnet-small": ResnetSmall, "conv-ae": ConvAE}[m]()
            x = torch.rand(bs, 1, 28, 28)
        y = torch.randint(0, 10, (bs,))
        opt = adam(net.parameters())
        loss_of = (lambda: F.mse_loss(net(x), x)) if m == "conv-ae" else (lambda: F.cross_entropy(net(x), y))

        def train():
            opt.zero_grad()
            loss_of().backward()
            opt.step()

        infer_input = x
    elif text:
        net = TextRnnAttn(cell="lstm" if "lstm" in m else "gru")
        ids = torch.randint(1, 8000, (bs, a.seq_len))
        mask = torch.ones(bs, a.seq_len, dtype=torch.long)
        y = torch.randint(0, 2, (bs,))
        opt = adam(net.parameters())

        def train():
            opt.zero_grad()
            F.cross_entropy(net(ids, mask), y).backward()
            opt.step()

        infer_input = (ids, mask)
    elif m == "dcgan":
        g, d = Generator(), Discriminator()
        og, od = adam(g.parameters(), 2e-4, (0.5, 0.999)), adam(d.parameters(), 2e-4, (0.5, 0.999))
        real = torch.rand(bs, 1, 28, 28) * 2 - 1
        bce = nn.BCEWithLogitsLoss()
        ones, zeros = torch.ones(bs), torch.zeros(bs)

        def train():
            od.zero_grad()
            fake = g(torch.randn(bs, 64)).detach()
            (bce(d(real), ones) + bce(d(fake), zeros)).backward()
            od.step()
            og.zero_grad()
            # No discriminator weight gradients in the generator's step, as in Vitrine's step
            # (and PyTorch Lightning's toggle_optimizer): the same work on both sides.
            d.requires_grad_(False)
            bce(d(g(torch.randn(bs, 64))), ones).backward()
            d.requires_grad_(True)
            og.step()

        net, infer_input = g, torch.randn(bs, 64)
    elif m == "bpr-mf":
        users, items = 943, 1682
        net = BPRMF(users, items)
        opt = adam(net.parameters())
        u, pos, neg = torch.randint(0, users, (bs,)), torch.randint(0, items, (bs,)), torch.randint(0, items, (bs,))

        def train():
            opt.zero_grad()
            e = net.user(u)
            diff = (e * net.item(pos)).sum(1) - (e * net.item(neg)).sum(1)
            (-F.logsigmoid(diff)).mean().backward()
            opt.step()

        rank, customers = ranking(lambda batch: net.user(batch) @ net.item.weight.T, users, items, dev, a.rank_customers)
    elif m == "two-tower":
        users, items, genres = 943, 1682, 19
        # One to three of 19 genres per item, as `vitrine bench` generates them (padding: 19).
        tokens = torch.full((items, 3), genres)
        for item in range(items):
            drawn = torch.randint(0, genres, (int(torch.randint(1, 4, ())),)).unique()
            tokens[item, : len(drawn)] = drawn
        net = TwoTower(users, items, (tokens, (tokens < genres).float()), genres)
        opt = adam(net.parameters())
        u, i = torch.randint(0, users, (bs,)), torch.randint(0, items, (bs,))
        # logQ correction from the items' frequency in 100,000 drawn interactions, as Vitrine
        # computes it from its training split.
        counts = torch.bincount(torch.randint(0, items, (100_000,)), minlength=items)
        log_q = ((counts + 1.0) / counts.sum()).log()
        targets = torch.arange(bs)

        def train():
            # In-batch softmax: each customer's item against the batch's others; items' own IDs
            # hidden at the rate 0.3; the same item twice in a batch is no negative of itself.
            opt.zero_grad()
            keep = torch.bernoulli(torch.full((bs, 1), 0.7))
            logits = net.user(u) @ net.items(i, keep).T / net.temperature - log_q[i][None, :]
            twice = (i[:, None] == i[None, :]) & ~torch.eye(bs, dtype=torch.bool)
            F.cross_entropy(logits.masked_fill(twice, -1e9), targets).backward()
            opt.step()

        rank, customers = ranking(net.scores, users, items, dev, a.rank_customers)
    elif m == "neumf":
        users, items = 943, 1682
        net = NeuMF(users, items)
        opt = adam(net.parameters())
        # Vitrine's batches of points: 2048 // 5 positives, each with 4 sampled negatives.
        positives = bs // 5
        u = torch.randint(0, users, (positives,)).repeat_interleave(5)
        i = torch.randint(0, items, (positives * 5,))
        labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]).repeat(positives)
        bs = positives * 5

        def train():
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(u, i), labels).backward()
            opt.step()

        # As many customers per call as Vitrine scores at once (32 M hidden values).
        chunk = max(1, min(1024, 32_000_000 // (items * 128)))
        rank, customers = ranking(net.scores, users, items, dev, a.rank_customers or chunk)
    elif m == "sasrec":
        users, items, max_len = 943, 1682, 50
        net = SASRec(items, max_len=max_len)
        opt = adam(net.parameters())
        # Windows of 50 items and the item after each (Vitrine computes the whole window too,
        # padding included, so full windows are the same work).
        window = torch.randint(1, items + 1, (bs, max_len + 1))
        inputs, targets = window[:, :-1], window[:, 1:] - 1

        def train():
            opt.zero_grad()
            logits = net(inputs).reshape(-1, net.item.embedding_dim) @ net.items().T
            F.cross_entropy(logits, targets.reshape(-1)).backward()
            opt.step()

        # Each customer's 50 latest items; their state after the last one scores every item.
        recent = torch.randint(1, items + 1, (users, max_len))
        rank, customers = ranking(lambda batch: net(recent[batch])[:, -1] @ net.items().T, users, items, dev, a.rank_customers)
    else:
        raise SystemExit(f"unknown model {m}")
    # PyTorch's BatchNorm1d cannot train on one example (the generator's first layer): not
    # timed (null in the JSON line), nor with --rank-only; the table's batch-1 rows show
    # inference alone.
    untimed = (m == "dcgan" and bs == 1) or a.rank_only
    train_rate = None if untimed else rate(train, a.warmup, a.steps, a.seconds, sync)
    net.eval()
    with torch.no_grad():
        if m in RECOMMENDERS:
            infer, infer_bs = rank, customers
        elif text:
            infer = lambda: net(*infer_input)
            infer_bs = bs
        else:
            infer = lambda: net(infer_input)
            infer_bs = bs
        infer_rate = rate(infer, a.warmup, a.steps, a.seconds, sync)
    print(json.dumps({
        "model": m,
        "backend": f"pytorch {torch.__version__}" + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
        "threads": torch.get_num_threads(),
        "batch_size": bs,
        "train_samples_per_sec": None if train_rate is None else train_rate * bs,
        "inference_samples_per_sec": infer_rate * infer_bs,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "peak_gpu_memory_mib": torch.cuda.max_memory_reserved() // 2**20 if cuda else None,
    }))


if __name__ == "__main__":
    main()
