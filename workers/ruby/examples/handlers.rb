# frozen_string_literal: true

# The Ruby example handlers for every callable in config/tasks: the same results, error
# types and retryability as the Rust ones in workers/rust/src/handlers.
require "tasker_core"
require_relative "handlers/math"
require_relative "handlers/util"
require_relative "handlers/errors"
require_relative "handlers/ecommerce"
require_relative "handlers/approvals"
require_relative "handlers/import"
