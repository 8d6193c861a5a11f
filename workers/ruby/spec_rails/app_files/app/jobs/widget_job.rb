# frozen_string_literal: true

# Appends to the widget's name what it was given and which task ran it.
class WidgetJob < ActiveJob::Base
  def perform(widget, note, options)
    widget.update!(name: "#{widget.name}|#{note}:#{options[:tag]}:#{provider_job_id}")
  end
end
