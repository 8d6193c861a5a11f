# frozen_string_literal: true

module RailsSpec
  # Runs a query through the app's Active Record pool.
  class QueryHandler < TaskerCore::StepHandler::Base
    def call(_ctx)
      success(result: Widget.connection.select_value("SELECT count(*) FROM widgets").to_i)
    end
  end
end
