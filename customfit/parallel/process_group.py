"""torch.distributed for the torch and keras-torch engines: N processes started the torchrun way
(torch.distributed.run's elastic launcher, called from Python), one gloo process group (these
engines run on the CPU; nccl would need their tensors on GPUs), and the pieces both engines
share.

`customfit run ... --devices N` on a torch engine starts N workers, each running the same run;
rank 0 writes the checkpoint, history and figures, and returns the Result. A run that torchrun
started itself (`torchrun --nproc-per-node N -m customfit run ... --devices WORLD`, or across
hosts with --nnodes) finds RANK and WORLD_SIZE set and joins the group they name instead.
"""

import os
import uuid

import torch
import torch.distributed as dist

from customfit.parallel.shares import LAUNCHED_HERE, cores


def launch(entrypoint, args, processes):
    """entrypoint(*args) in `processes` fresh processes on this host, as torchrun --standalone
    starts them (RANK, WORLD_SIZE, MASTER_ADDR, ... set); returns their return values by rank."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=1.0,
        start_method="spawn",
    )
    # torchrun's default for several processes on one host: one thread each, unless asked.
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // processes)))
    os.environ[LAUNCHED_HERE] = "1"  # the workers inherit it: this process holds the run folder
    try:
        results = elastic_launch(config, entrypoint)(*args)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        os.environ.pop(LAUNCHED_HERE, None)
    return [results[rank] for rank in sorted(results)]


def join():
    """Join the gloo process group the launcher's environment names; returns (rank, world)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return dist.get_rank(), dist.get_world_size()


def leave():
    if dist.is_initialized():
        dist.destroy_process_group()


def active():
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return dist.get_rank() if active() else 0


def world():
    return dist.get_world_size() if active() else 1


def check_world(devices):
    if world() != devices:
        raise RuntimeError(
            f"{devices} devices on a torch engine are {devices} processes of one "
            f"torch.distributed group; this process's group has {world()}"
        )


def shuffled_order(n, seed):
    """The order a DataLoader(shuffle=True, generator=seeded) takes n samples in: the order one
    process trains in, which N processes then deal out among themselves."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        range(n), batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    return next(iter(loader)).tolist()


def epoch_loader(dataset, batch_size, shuffle_seed, devices):
    """The torch engines' batches for one epoch. One device: a shuffled DataLoader. Several:
    this process's share of every global batch (DistributedSampler, drop_last), taken from the
    order one process would train in, so that N processes train as one does."""
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    if devices == 1:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(shuffle_seed),
        )
    shuffled = Subset(dataset, shuffled_order(len(dataset), shuffle_seed))
    return DataLoader(
        shuffled,
        batch_size=batch_size // devices,
        sampler=DistributedSampler(shuffled, shuffle=False, drop_last=True),
    )


def share(order):
    """This process's share of an epoch's shuffled indices `order`, as DistributedSampler deals
    them (drop_last: every process the same count; every world-th index, from its rank)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(order)), shuffle=False, drop_last=True)
    return [order[i] for i in sampler]


def mean_over_processes(values):
    """{name: float} averaged over the processes (each saw as many samples: equal weights)."""
    if not active() or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in names], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / dist.get_world_size() for k, v in zip(names, tensor.tolist())}
