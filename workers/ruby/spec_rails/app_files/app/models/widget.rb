# frozen_string_literal: true

class Widget < ActiveRecord::Base
end
