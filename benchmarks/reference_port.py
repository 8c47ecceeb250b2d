"""FOR BENCHMARK COMPARISON ONLY — a straight port of the reference ACMR training loop (seeyourmind/ACMR).

This is NOT the project's implementation (that is :mod:`acmr_core`). It reproduces the reference's structure
and costs so that benchmarks compare like with like: modules kept in plain dicts, a host-side ``randperm`` per
step, three ``.item()`` host syncs per step, warm-up factors rebuilt as tensors every step, the default
(for-loop) Adam, ``.squeeze()`` in the encoders, and a final classifier stage that iterates a ``DataLoader``
over a per-sample dataset (batch 32) and runs a full test pass after every epoch, keeping the best test H (the
test-set selection the project does NOT do). The only change is that the device is a parameter instead of
hard-coded CUDA, so it runs on this CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn, optim
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        m.bias.data.fill_(0)
        nn.init.xavier_uniform_(m.weight, gain=0.5)


class _Encoder(nn.Module):
    def __init__(self, input_dim: int, latent: int, hidden: int) -> None:
        super().__init__()
        self.feature_encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU())
        self._mu = nn.Linear(hidden, latent)
        self._logvar = nn.Linear(hidden, latent)
        self.apply(_init)

    def forward(self, x):
        h = self.feature_encoder(x).squeeze()
        return self._mu(h).squeeze(), self._logvar(h).squeeze()


class _Decoder(nn.Module):
    def __init__(self, latent: int, output_dim: int, hidden: int) -> None:
        super().__init__()
        self.feature_decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, output_dim)
        )
        self.apply(_init)

    def forward(self, z):
        return self.feature_decoder(z).squeeze()


class _Mix(nn.Module):
    def __init__(self, channel: int, hidden: int) -> None:
        super().__init__()
        self.nchannel = channel * 2
        self.mix_net = nn.Sequential(
            nn.Linear(channel * 2, hidden), nn.ReLU(), nn.Linear(hidden, channel), nn.Sigmoid()
        )
        self.apply(_init)

    def forward(self, x, y):
        idx = torch.randperm(self.nchannel)
        shuffled = torch.cat((x, y), dim=1).t()[idx].t()
        w = self.mix_net(shuffled)
        return w * x, w * y


class _LinearLogSoftmax(nn.Module):
    def __init__(self, input_dim: int, nclass: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_dim, nclass)

    def forward(self, x):
        return F.log_softmax(self.fc(x), dim=1)


class ReferenceModel(nn.Module):
    """The reference ``Model``: encoders/decoders/IEM/heads in plain dicts (absent from ``state_dict``)."""

    def __init__(self, feature_dim, attribute_dim, num_classes, hidden, latent=64, device="cpu") -> None:
        super().__init__()
        self.device = device
        self.latent_size = latent
        self.reparameterize_with_noise = True
        dims = {"resnet_features": feature_dim, "attributes": attribute_dim}
        self.encoder = {k: _Encoder(d, latent, hidden[k][0]).to(device) for k, d in dims.items()}
        self.decoder = {k: _Decoder(latent, d, hidden[k][1]).to(device) for k, d in dims.items()}
        self.aux_cls = {k: _LinearLogSoftmax(latent, num_classes).to(device) for k in dims}
        for head in self.aux_cls.values():
            head.apply(_init)
        self.IEM = {k: _Mix(latent, 99).to(device) for k in dims}

    def reparameterize(self, mu, logvar):
        if self.reparameterize_with_noise:
            sigma = torch.exp(logvar)
            eps = torch.empty(logvar.size()[0], 1, device=logvar.device).normal_(0, 1).expand(sigma.size())
            return mu + sigma * eps
        return mu

    def cross_weight(self, img, att):
        r = torch.bmm(img.view(-1, self.latent_size, 1), att.view(-1, 1, self.latent_size))
        soft = F.softmax(r, 1)
        return torch.bmm(soft, img.unsqueeze(2)).squeeze(), torch.bmm(soft, att.unsqueeze(2)).squeeze()

    def forward(self, img, att):
        mu_i, lv_i = self.IEM["resnet_features"](*self.encoder["resnet_features"](img))
        z_i = self.reparameterize(mu_i, lv_i)
        mu_a, lv_a = self.IEM["attributes"](*self.encoder["attributes"](att))
        z_a = self.reparameterize(mu_a, lv_a)
        wi, wa = self.cross_weight(z_i, z_a)
        return {
            "rec": {"img": self.decoder["resnet_features"](z_i), "att": self.decoder["attributes"](z_a)},
            "dis": {"mui": mu_i, "mua": mu_a, "logvari": lv_i, "logvara": lv_a},
            "cls": {"vis": self.aux_cls["resnet_features"](wi), "sem": self.aux_cls["attributes"](wa)},
        }


def hypers_from_config(train) -> dict:
    """The reference's hyper-parameter dict, filled from an :class:`acmr_core.model.config.TrainConfig`."""
    warm = {name: getattr(train, name).to_dict() for name in ("beta", "distance", "classify")}
    return {
        "lr_gen_model": train.lr_vae, "lr_iem_model": train.lr_iem, "lr_aux_cls": train.lr_vsa,
        "batch_size": train.batch_size, "epochs": train.epochs, "warmup": warm,
        "img_seen_samples": train.cls_seen_samples, "att_unseen_samples": train.cls_unseen_samples,
        "lr_cls": train.cls_reference_lr, "cls_batch_size": train.cls_reference_batch_size,
        "cls_epochs": train.cls_reference_epochs,
    }  # fmt: skip


def _factor(warm: dict, epoch: int, device) -> torch.Tensor:
    f = (
        1.0
        * (epoch - warm["start_epoch"])
        / (1.0 * (warm["end_epoch"] - warm["start_epoch"]))
        * warm["factor"]
    )
    return torch.tensor([min(max(f, 0), warm["factor"])], device=device)


def train_vae(model, train_x, train_y, aux, hypers, progress=None):
    """The reference ``train_vae``: random batches drawn per step, ``ntrain / batch`` steps per epoch."""
    device = model.device
    params = []
    for k in model.encoder:
        params += list(model.encoder[k].parameters()) + list(model.decoder[k].parameters())
    iem = [p for k in model.IEM for p in model.IEM[k].parameters()]
    cls = [p for k in model.aux_cls for p in model.aux_cls[k].parameters()]
    optimizer = optim.Adam(
        [
            {"params": params, "lr": hypers["lr_gen_model"]},
            {"params": iem, "lr": hypers["lr_iem_model"]},
            {"params": cls, "lr": hypers["lr_aux_cls"]},
        ],
        betas=(0.9, 0.999),
        weight_decay=0,
        eps=1e-08,
        amsgrad=True,
    )
    l1 = nn.L1Loss(reduction="sum")
    nll = nn.NLLLoss()
    ntrain = train_x.shape[0]
    warm = hypers["warmup"]
    for epoch in range(hypers["epochs"]):
        for _ in range(0, ntrain, hypers["batch_size"]):
            idx = torch.randperm(ntrain)[0 : hypers["batch_size"]]
            label = train_y[idx].long().to(device)
            img = train_x[idx].to(device)
            att = aux[label]
            res = model(img, att)
            rec = l1(res["rec"]["img"], img) + l1(res["rec"]["att"], att)
            d = res["dis"]
            kld = 0.5 * torch.sum(1 + d["logvara"] - d["mua"].pow(2) - d["logvara"].exp()) + 0.5 * torch.sum(
                1 + d["logvari"] - d["mui"].pow(2) - d["logvari"].exp()
            )
            distance = torch.sqrt(
                torch.sum((d["mui"] - d["mua"]) ** 2, dim=1)
                + torch.sum((torch.sqrt(d["logvari"].exp()) - torch.sqrt(d["logvara"].exp())) ** 2, dim=1)
            ).sum()
            classification = nll(res["cls"]["vis"], label) + nll(res["cls"]["sem"], label)
            beta = _factor(warm["beta"], epoch, device)
            distance_factor = _factor(warm["distance"], epoch, device)
            class_factor = _factor(warm["classify"], epoch, device)
            optimizer.zero_grad()
            loss = rec - beta * kld
            if distance_factor > 0:
                loss += distance_factor * distance
            loss += class_factor * classification
            loss.backward()
            optimizer.step()
            loss.item(), distance.item(), classification.item()  # the reference returns these every step
        if progress is not None:
            progress(epoch)
    model.eval()
    for group in (model.encoder, model.decoder, model.aux_cls, model.IEM):
        for module in group.values():
            module.eval()


def _sample_per_class(features, labels, per_class):
    out_x, out_y = [], []
    for s in labels.unique():
        of_class = features[labels == s]
        multiplier = int(np.ceil(max(1, per_class / of_class.size(0))))
        out_x.append(of_class.repeat(multiplier, 1)[:per_class])
        out_y.append(s.repeat(per_class))
    return torch.cat(out_x), torch.cat(out_y)


class _PerSample(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y.long()

    def __len__(self) -> int:
        return self.x.size(0)

    def __getitem__(self, i):
        return {"x": self.x[i, :], "y": self.y[i]}


def _per_class_acc(test_label, predicted, target_classes):
    accs = torch.zeros(target_classes.size(0))
    for i in range(target_classes.size(0)):
        is_class = test_label == target_classes[i]
        accs[i] = (predicted[is_class] == test_label[is_class]).sum().float() / is_class.sum().float()
    return accs.mean().item()


def classifier_stage(model, train_x, train_y, aux, test_seen, test_unseen, hypers, num_classes):
    """The reference ``train7test_classifier``: sample latents (noisy) and encode test images (mu), then
    fit."""
    seen_x, seen_y = test_seen
    unseen_x, unseen_y = test_unseen
    novelclasses = unseen_y.unique()
    with torch.no_grad():
        model.reparameterize_with_noise = False
        test_novel = model.reparameterize(
            *model.IEM["resnet_features"](*model.encoder["resnet_features"](unseen_x))
        )
        test_seen_z = model.reparameterize(
            *model.IEM["resnet_features"](*model.encoder["resnet_features"](seen_x))
        )
        model.reparameterize_with_noise = True
        img, img_y = _sample_per_class(train_x, train_y, hypers["img_seen_samples"])
        att, att_y = _sample_per_class(aux[novelclasses], novelclasses, hypers["att_unseen_samples"])
        z_img = model.reparameterize(*model.IEM["resnet_features"](*model.encoder["resnet_features"](img)))
        z_att = model.reparameterize(*model.IEM["attributes"](*model.encoder["attributes"](att)))
    x, y = torch.cat([z_img, z_att]), torch.cat([img_y, att_y])
    return fit_reference_classifier(x, y, (test_seen_z, seen_y), (test_novel, unseen_y), hypers, num_classes)


def fit_reference_classifier(x, y, test_seen, test_unseen, hypers, num_classes):
    """The reference ``CLASSIFIER``: DataLoader over per-sample dicts (batch 32), Adam(lr, beta1 0.3), a
    full test
    pass after every epoch, keeping the best test H. Returns ((S, U, H) of the best epoch, [(S, U, H)...])."""
    test_seen_z, seen_y = test_seen
    test_novel, unseen_y = test_unseen
    seenclasses, novelclasses = seen_y.unique(), unseen_y.unique()
    clf = _LinearLogSoftmax(x.shape[1], num_classes).to(x.device)
    clf.apply(_init)
    optimizer = optim.Adam(clf.parameters(), lr=hypers["lr_cls"], betas=(0.3, 0.999))
    loader = DataLoader(_PerSample(x, y), batch_size=hypers["cls_batch_size"], shuffle=True, drop_last=True)
    criterion = nn.NLLLoss()
    history, best = [], (0.0, 0.0, -1.0)

    def evaluate(features, labels, classes):
        predicted = torch.zeros(labels.size(), dtype=torch.long)
        with torch.no_grad():
            for start in range(0, features.size(0), hypers["cls_batch_size"]):
                end = min(features.size(0), start + hypers["cls_batch_size"])
                predicted[start:end] = torch.argmax(clf(features[start:end]).data, 1)
        return _per_class_acc(labels.cpu(), predicted, classes.cpu())

    for _ in range(hypers["cls_epochs"]):
        for batch in loader:
            clf.zero_grad()
            loss = criterion(clf(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
        s = evaluate(test_seen_z, seen_y, seenclasses)
        u = evaluate(test_novel, unseen_y, novelclasses)
        h = 2 * s * u / (s + u) if s + u > 0 else 0.0
        history.append((s, u, h))
        if h > best[2]:
            best = (s, u, h)
    return best, history
