"""Example Python handlers: the order-fulfillment workflow (templates/), and the handlers
the benchmark's templates name."""
