"""Echo task (label = token at step 2 of 20), LSTM(32), Adam lr 1e-2, 30 epochs, 5 seeds:
forget-gate bias 1.0 vs torch's uniform init. Prints final val accuracy and first epoch >= 0.9."""
import numpy as np, fastlstm, json
from fastlstm import nn
fastlstm.set_num_threads(1)
out = {}
for fb in (None, 1.0):
    accs, first = [], []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        X = rng.integers(0, 4, (1200, 20)); y = X[:, 2]
        m = nn.Sequential(nn.Embedding(4, 8, seed=seed), nn.LSTM(8, 32, batch_first=True, seed=seed, forget_bias=fb),
                          nn.LastStep(), nn.Linear(32, 4, seed=seed))
        h = fastlstm.fit(m, X[:1000], y[:1000], loss="cross_entropy", epochs=30, batch_size=32, lr=1e-2,
                         validation_data=(X[1000:], y[1000:]), metrics=["accuracy"], verbose=0, seed=seed)
        a = h.history["val_accuracy"]
        accs.append(a[-1]); first.append(next((i + 1 for i, v in enumerate(a) if v >= 0.9), None))
    out[str(fb)] = {"final_acc": accs, "first_epoch_ge_0.9": first}
    print(fb, accs, first, flush=True)
json.dump(out, open("docs/forget-bias.json", "w"))
