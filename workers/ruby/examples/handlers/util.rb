# frozen_string_literal: true

module Examples
  # Does nothing; for throughput benchmarks.
  class Noop < TaskerCore::StepHandler::Base
    def call(_ctx)
      success(result: nil)
    end
  end

  # Sleeps initialization["ms"] milliseconds (the context's `sleep_ms` wins), then returns
  # them. Kernel#sleep releases the GVL, so other handler threads run meanwhile.
  class Sleep < TaskerCore::StepHandler::Base
    def call(ctx)
      ms = ctx.task_context.key?("sleep_ms") ? ctx.task_context["sleep_ms"] : ctx.initialization["ms"]
      ms = 0 unless ms.is_a?(Integer) && ms >= 0
      sleep(ms / 1000.0)
      success(result: { "slept_ms" => ms })
    end
  end
end
