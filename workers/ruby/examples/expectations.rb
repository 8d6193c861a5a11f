# frozen_string_literal: true

module Examples
  ORDER = { "order_id" => 42, "items" => [{ "sku" => "A", "quantity" => 2, "price" => 10.5 },
                                          { "sku" => "B", "quantity" => 1, "price" => 4.0 }] }.freeze

  # Every template in config/tasks, a context for it, and how its run must end: the same
  # figures the Rust end-to-end tests check.
  CASES = [
    { namespace: "linear_workflow", name: "linear_math", context: { "value" => 6 }, status: "complete",
      steps: { "add_two" => { result: 8 }, "triple" => { result: 24 }, "square" => { result: 576 },
               "minus_one" => { result: 575 } } },
    { namespace: "diamond_workflow", name: "diamond_math", context: { "value" => 3 }, status: "complete",
      steps: { "start" => { result: 9 }, "left" => { result: 19 }, "right" => { result: 18 },
               "join" => { result: 37 } } },
    { namespace: "tree_workflow", name: "tree_math", context: { "value" => 2 }, status: "complete",
      steps: { "root" => { result: 4 }, "branch_a" => { result: 5 }, "branch_b" => { result: 8 },
               "leaf_a1" => { result: 10 }, "leaf_a2" => { result: 25 }, "leaf_b1" => { result: 16 },
               "leaf_b2" => { result: 64 }, "merge" => { result: 115 } } },
    { namespace: "mixed_dag_workflow", name: "mixed_dag_math", context: { "value" => 5 }, status: "complete",
      steps: { "init" => { result: 10 }, "process_a" => { result: 15 }, "process_b" => { result: 30 },
               "validate_a" => { result: 225 }, "transform" => { result: 255 }, "finalize" => { result: 266 } } },
    { namespace: "ecommerce", name: "order_fulfillment", context: ORDER, status: "complete",
      steps: { "validate_order" => { result: { "order_id" => 42, "item_count" => 3, "total" => 25.0 } },
               "reserve_inventory" => { result: { "reserved" => [{ "sku" => "A", "quantity" => 2 },
                                                                 { "sku" => "B", "quantity" => 1 }] } },
               "charge_payment" => { result: { "charge_id" => "ch_42", "amount" => 25.0, "currency" => "USD" } },
               "ship_order" => { result: { "tracking_number" => "TRK00000042", "charge_id" => "ch_42",
                                           "status" => "shipped" } } } },
    { namespace: "sleep_workflow", name: "parallel_sleep", context: { "sleep_ms" => 20 }, status: "complete",
      steps: %w[sleep_a sleep_b sleep_c sleep_d].to_h { |s| [s, { result: { "slept_ms" => 20 } }] } },
    { namespace: "error_scenarios", name: "retry_then_succeed", context: { "value" => 4 }, status: "complete",
      steps: { "flaky" => { result: 4, attempts: 3 }, "after_flaky" => { result: 5 } } },
    { namespace: "error_scenarios", name: "always_fails", context: {}, status: "error",
      steps: { "doomed" => { status: "error", attempts: 3, error_type: "always_fails", retryable: true } } },
    { namespace: "error_scenarios", name: "permanent_failure", context: { "value" => 1 }, status: "error",
      steps: { "fail_fast" => { status: "error", attempts: 1, error_type: "validation_error", retryable: false },
               "after_slow" => { status: "pending" } } },
    { namespace: "error_scenarios", name: "handler_timeout", context: {}, status: "error",
      steps: { "hangs" => { status: "error", attempts: 1, error_type: "handler_timeout", retryable: true } } },
    { namespace: "approvals", name: "approval_routing", context: { "amount" => 50_000 }, status: "complete",
      steps: { "route" => { result: { "route" => "manager_and_finance" } },
               "manager_approval" => { result: { "approved_by" => "manager" } },
               "finance_review" => { result: { "approved_by" => "finance" } },
               "finalize" => { result: { "approved" => true, "approvals" => %w[manager finance],
                                         "route" => "manager_and_finance" } } },
      absent: ["auto_approve"] },
    { namespace: "imports", name: "batched_import", context: { "rows" => 250, "batch_size" => 100 }, status: "complete",
      steps: { "plan" => { result: { "total" => 250 } },
               "process_batch_000" => { result: { "batch_id" => "000", "count" => 100, "sum" => 4950 } },
               "process_batch_002" => { result: { "batch_id" => "002", "count" => 50, "sum" => 11_225 } },
               "aggregate" => { result: { "batches" => 3, "count" => 250, "sum" => 31_125,
                                          "batch_ids" => %w[000 001 002] } } },
      absent: %w[process_batch process_batch_003] }
  ].freeze

  # What differs between a finished task and its case; empty when it matches.
  def self.mismatches(example, task)
    out = []
    out << "status #{task.status}, expected #{example[:status]}" unless task.status == example[:status]
    example[:steps].each do |name, want|
      step = task.steps.find { |s| s.name == name }
      next out << "no step #{name}" unless step

      actual = { result: step.result, status: step.status, attempts: step.attempts,
                 error_type: step.error&.fetch("error_type", nil), retryable: step.error&.fetch("retryable", nil) }
      want.each do |field, value|
        out << "#{name}.#{field} = #{actual[field].inspect}, expected #{value.inspect}" unless actual[field] == value
      end
    end
    # Steps a decision or batch must not have created.
    example.fetch(:absent, []).each do |name|
      out << "step #{name} was created" if task.steps.any? do |s|
                                             s.name == name
                                           end
    end
    out
  end
end
