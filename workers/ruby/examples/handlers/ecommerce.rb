# frozen_string_literal: true

# The order-fulfillment example. Every figure derives from the order's items, so the
# results are known in advance: total = sum(quantity * price).
module Ecommerce
  # Shared by the order handlers.
  module OrderItems
    private

    def items(ctx)
      items = ctx.task_context["items"]
      raise TaskerCore::PermanentError, "order has no items" unless items.is_a?(Array)

      items
    end

    def order_id(ctx)
      id = ctx.task_context["order_id"]
      int64?(id) ? id : 0
    end

    # JSON integers the Rust handlers read as i64.
    def int64?(value)
      value.is_a?(Integer) && value.bit_length < 64
    end
  end

  class ValidateOrder < TaskerCore::StepHandler::Base
    include OrderItems

    def call(ctx)
      items = items(ctx)
      max = ctx.initialization["max_items"]
      max = 100 unless max.is_a?(Integer) && max >= 0
      raise TaskerCore::PermanentError, "order has #{items.size} items; at most #{max} allowed" if items.size > max

      total = 0.0
      count = 0
      items.each do |item|
        q = item.is_a?(Hash) && int64?(item["quantity"]) ? item["quantity"] : 0
        p = item.is_a?(Hash) && item["price"].is_a?(Numeric) ? item["price"].to_f : 0.0
        if q <= 0
          raise TaskerCore::PermanentError.new("every item needs a positive quantity", error_type: "validation_error")
        end

        total += q * p
        count += q
      end
      success(result: { "order_id" => ctx.task_context["order_id"], "item_count" => count,
                        "total" => (total * 100).round / 100.0 })
    end
  end

  class ReserveInventory < TaskerCore::StepHandler::Base
    include OrderItems

    def call(ctx)
      reserved = items(ctx).map do |i|
        i = {} unless i.is_a?(Hash)
        { "sku" => i["sku"], "quantity" => i["quantity"] }
      end
      success(result: { "reserved" => reserved })
    end
  end

  class ChargePayment < TaskerCore::StepHandler::Base
    include OrderItems

    def call(ctx)
      validated = ctx.dependency_result("validate_order")
      total = validated.is_a?(Hash) ? validated["total"] : nil
      raise TaskerCore::PermanentError, "validate_order result has no total" unless total.is_a?(Numeric)

      currency = ctx.initialization["currency"]
      currency = "USD" unless currency.is_a?(String)
      success(result: { "charge_id" => "ch_#{order_id(ctx)}", "amount" => total.to_f, "currency" => currency })
    end
  end

  class ShipOrder < TaskerCore::StepHandler::Base
    include OrderItems

    def call(ctx)
      charge = ctx.dependency_result("charge_payment")
      charge_id = charge.is_a?(Hash) ? charge["charge_id"] : nil
      raise TaskerCore::PermanentError, "order was not charged" unless charge_id.is_a?(String)

      success(result: { "tracking_number" => format("TRK%08d", order_id(ctx)), "charge_id" => charge_id,
                        "status" => "shipped" })
    end
  end
end
