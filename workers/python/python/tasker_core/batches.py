"""Builds the batches a batchable step returns."""


def ranges(total, size):
    """`total` items cut into batches of `size`, in order:

        ranges(total=250, size=100)
        # [{"batch_id": "000", "start_cursor": 0, "end_cursor": 100}, ...,
        #  {"batch_id": "002", "start_cursor": 200, "end_cursor": 250}]

    [] when total is 0."""
    total = int(total)
    size = int(size)
    if total < 0:
        raise ValueError(f"total must not be negative, got {total}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    return [
        {"batch_id": f"{i:03d}", "start_cursor": start, "end_cursor": min(start + size, total)}
        for i, start in enumerate(range(0, total, size))
    ]
