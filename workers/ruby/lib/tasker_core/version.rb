# frozen_string_literal: true

module TaskerCore
  VERSION = "0.1.0"
end
