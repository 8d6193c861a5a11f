# frozen_string_literal: true

module Examples
  module Math
    # Takes the sum of its parents' results (or the context's `value` for a root step) and
    # applies initialization["operation"] (add, multiply, square) with ["operand"].
    # Arithmetic is 64-bit, as in the Rust example: leaving that range fails the step.
    class Compute < TaskerCore::StepHandler::Base
      INT64 = (-(2**63)..(2**63 - 1))

      def call(ctx)
        input = input_of(ctx)
        operand = ctx.initialization["operand"]
        operand = 0 unless operand.is_a?(Integer) && INT64.cover?(operand)
        out = case (op = ctx.initialization["operation"])
              when "add" then input + operand
              when "multiply" then input * operand
              when "square" then input * input
              else raise TaskerCore::PermanentError,
                         "unknown operation #{op.is_a?(String) ? "Some(#{op.inspect})" : "None"}"
              end
        raise TaskerCore::PermanentError, "arithmetic overflow" unless INT64.cover?(out)

        success(result: out)
      end

      private

      def input_of(ctx)
        if ctx.dependency_results.empty?
          value = ctx.task_context["value"]
          raise TaskerCore::PermanentError, "context has no integer 'value'" unless int64?(value)

          return value
        end
        sum = 0
        ctx.dependency_results.each do |name, v|
          raise TaskerCore::PermanentError, "result of '#{name}' is not an integer" unless int64?(v)

          sum += v
          raise TaskerCore::PermanentError, "arithmetic overflow" unless INT64.cover?(sum)
        end
        sum
      end

      def int64?(value)
        value.is_a?(Integer) && INT64.cover?(value)
      end
    end
  end
end
