"""The order-fulfillment example in Python. Every figure derives from the order's items, so
the results are known in advance: total = sum(quantity * price)."""

from tasker_core import PermanentError, StepHandler


def _items(ctx):
    items = ctx.task_context.get("items")
    if not isinstance(items, list):
        raise PermanentError("order has no items")
    return items


class ValidateOrder(StepHandler):
    def call(self, ctx):
        items = _items(ctx)
        limit = ctx.initialization.get("max_items", 100)
        if len(items) > limit:
            raise PermanentError(f"order has {len(items)} items; at most {limit} allowed")
        total = 0.0
        count = 0
        for item in items:
            quantity = item.get("quantity", 0)
            if not isinstance(quantity, int) or quantity <= 0:
                raise PermanentError("every item needs a positive quantity", error_type="validation_error")
            total += quantity * float(item.get("price", 0))
            count += quantity
        return self.success({"order_id": ctx.task_context.get("order_id"), "item_count": count,
                             "total": round(total, 2)})


class ReserveInventory(StepHandler):
    def call(self, ctx):
        return self.success({"reserved": [{"sku": i.get("sku"), "quantity": i.get("quantity")} for i in _items(ctx)]})


class ChargePayment(StepHandler):
    # Coroutines run on the worker's asyncio loop: a payment gateway call would be awaited.
    async def call(self, ctx):
        validated = ctx.dependency_result("validate_order") or {}
        total = validated.get("total")
        if not isinstance(total, (int, float)):
            raise PermanentError("validate_order result has no total")
        currency = ctx.initialization.get("currency", "USD")
        return self.success({"charge_id": f"ch_{ctx.task_context.get('order_id')}", "amount": float(total),
                             "currency": currency}, metadata={"gateway": "example"})


class ShipOrder(StepHandler):
    def call(self, ctx):
        charge = ctx.dependency_result("charge_payment") or {}
        order_id = ctx.task_context.get("order_id", 0)
        return self.success({"tracking_number": f"TRK{order_id:08d}", "charge_id": charge.get("charge_id"),
                             "status": "shipped"})
