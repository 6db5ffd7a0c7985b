"""The digits MLP of train_digits.py, trained data-parallel on N processes: every rank holds
the model, reads its slice of each global batch of 64, and the compiled train step averages
the gradients over ranks inside its one kernel (through memory the ranks share on one machine,
MPI_Allreduce across machines) before the Adam update. With
the same seeds it follows the single-process run (same global batches, same order), so it
reaches the same accuracy; rank 0 logs.

Run: python -m jitgrad.distributed.run -n 2 examples/train_digits_distributed.py [--epochs 40]
(needs the `examples` and `distributed` extras)
"""

import argparse
import time

import numpy as np
from tqdm import tqdm
from train_digits import evaluate, load_data, loss_fn, model

import jitgrad as jg
import jitgrad.distributed as dist


def main(epochs: int, batch_size: int) -> float:
    dist.init()
    (x_train, y_train), (x_test, y_test) = load_data()
    # Every rank initialises from the same seed; broadcasting rank 0's values makes that so
    # whatever the initialiser does.
    params = dist.broadcast(model.init(0, (None, x_train.shape[1])))
    optimizer = jg.optim.Adam(learning_rate=3e-3)
    state = optimizer.init(params)
    train_step = jg.jit_train_step(loss_fn, optimizer, has_aux=True, distributed=True)
    loader = jg.data.batches(
        x_train, y_train, batch_size=batch_size, seed=0, drop_last=True, shard=True
    )
    if dist.is_main():
        print(f"{dist.size()} ranks, global batch {batch_size}, {len(loader)} steps per epoch")
    start = time.perf_counter()
    train_step(params, state, *next(iter(loader)))  # compiles, as train_digits.py's first step
    if dist.is_main():
        print(f"time to first step (trace + compile): {time.perf_counter() - start:.2f} s")

    final = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        totals = np.zeros(2)  # this rank's sums of loss and accuracy over the epoch
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not dist.is_main()
        )
        for xb, yb in bar:
            loss, accuracy = train_step(params, state, xb, yb)
            totals += (float(loss), float(accuracy))
            if dist.is_main():
                bar.set_postfix(loss=f"{float(loss):.3f}")
        seconds = time.perf_counter() - t0
        loss, accuracy = dist.allreduce(totals / len(loader), op="mean")  # over ranks
        if dist.is_main():
            final = evaluate(params, x_test, y_test)
            print(
                f"epoch {epoch + 1:3d}: loss {loss:.4f}  train acc {accuracy:.3f}  "
                f"test acc {final:.3f}  ({seconds / len(loader) * 1e6:.0f} us/step)"
            )
    if dist.is_main():
        print(f"test accuracy: {final:.4f}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    args = parser.parse_args()
    main(args.epochs, args.batch_size)
