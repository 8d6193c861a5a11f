# frozen_string_literal: true

module Import
  # Splits context["rows"] rows into batches of context["batch_size"].
  class Plan < TaskerCore::StepHandler::Base
    def call(ctx)
      rows = ctx.task_context["rows"]
      size = ctx.task_context["batch_size"]
      unless rows.is_a?(Integer) && rows >= 0 && size.is_a?(Integer)
        raise TaskerCore::PermanentError, "context needs integer 'rows' and 'batch_size'"
      end

      success(result: { "total" => rows }, batches: TaskerCore::Batches.ranges(total: rows, size: [size, 1].max))
    end
  end

  # "Imports" rows start_cursor...end_cursor of its batch; row i holds the number i.
  class ProcessBatch < TaskerCore::StepHandler::Base
    def call(ctx)
      batch = ctx.batch or raise TaskerCore::PermanentError, "step has no batch (is it a batch worker?)"
      first = batch["start_cursor"]
      last = batch["end_cursor"]
      success(result: { "batch_id" => batch["batch_id"], "count" => [last - first, 0].max,
                        "sum" => (first...last).sum })
    end
  end

  # Adds up the batch workers' counts and sums, in batch order.
  class Aggregate < TaskerCore::StepHandler::Base
    def call(ctx)
      results = ctx.batch_results("process_batch")
      success(result: { "batches" => results.size, "count" => results.sum { |r| r["count"] },
                        "sum" => results.sum { |r| r["sum"] }, "batch_ids" => results.map { |r| r["batch_id"] } })
    end
  end
end
