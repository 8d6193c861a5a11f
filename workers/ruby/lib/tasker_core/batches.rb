# frozen_string_literal: true

module TaskerCore
  # Builds the batches a batchable step returns.
  module Batches
    module_function

    # `total` items cut into batches of `size`, in order:
    #   ranges(total: 250, size: 100)
    #   # => [{"batch_id"=>"000", "start_cursor"=>0, "end_cursor"=>100}, ...,
    #   #     {"batch_id"=>"002", "start_cursor"=>200, "end_cursor"=>250}]
    # [] when total is 0.
    def ranges(total:, size:)
      total = Integer(total)
      size = Integer(size)
      raise ArgumentError, "total must not be negative, got #{total}" if total.negative?
      raise ArgumentError, "size must be at least 1, got #{size}" if size < 1

      (0...total).step(size).each_with_index.map do |start, i|
        { "batch_id" => format("%03d", i), "start_cursor" => start, "end_cursor" => [start + size, total].min }
      end
    end
  end
end
