# frozen_string_literal: true

# Fails on its first execution; retry_on brings it back.
class FlakyJob < ActiveJob::Base
  class Flake < StandardError; end

  retry_on Flake, wait: 1.second, attempts: 3

  def perform(widget)
    widget.update!(name: "#{widget.name}|run#{executions}")
    raise Flake, "first run fails" if executions == 1
  end
end
