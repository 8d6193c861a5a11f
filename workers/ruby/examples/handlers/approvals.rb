# frozen_string_literal: true

module Approvals
  # Chooses the approvals a request needs from its amount: none at 0 or below, then
  # auto_approve, manager_approval, or manager_approval and finance_review.
  class Route < TaskerCore::StepHandler::Base
    def call(ctx)
      amount = ctx.task_context["amount"]
      raise TaskerCore::PermanentError, "context has no numeric 'amount'" unless amount.is_a?(Numeric)

      route, next_steps =
        if amount <= 0 then ["rejected", []]
        elsif amount < 1000 then ["auto", ["auto_approve"]]
        elsif amount < 10_000 then ["manager", ["manager_approval"]]
        else
          ["manager_and_finance", %w[manager_approval finance_review]]
        end
      success(result: { "route" => route }, next_steps: next_steps)
    end
  end

  # One approval, by initialization["approver"].
  class Approve < TaskerCore::StepHandler::Base
    def call(ctx)
      approver = ctx.initialization["approver"]
      raise TaskerCore::PermanentError, "initialization has no 'approver'" unless approver

      success(result: { "approved_by" => approver })
    end
  end

  # Approved when at least one approval ran; lists them in template order. A branch the
  # decision did not create has no result (nil).
  class Finalize < TaskerCore::StepHandler::Base
    def call(ctx)
      approvals = %w[auto_approve manager_approval finance_review]
                  .filter_map { |name| ctx.dependency_result(name) }.map { |r| r["approved_by"] }
      success(result: { "approved" => !approvals.empty?, "approvals" => approvals,
                        "route" => ctx.dependency_result("route")&.fetch("route", nil) })
    end
  end
end
