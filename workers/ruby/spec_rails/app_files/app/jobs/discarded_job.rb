# frozen_string_literal: true

# Raises what discard_on drops, and something nothing handles.
class DiscardedJob < ActiveJob::Base
  class Gone < StandardError; end
  class Broken < StandardError; end

  discard_on Gone

  def perform(widget, error)
    widget.update!(name: "#{widget.name}|run#{executions}")
    raise DiscardedJob.const_get(error), "raised by the job"
  end
end
