# frozen_string_literal: true

require "erb"

module TaskerCore
  # Which database a Rails app's Tasker uses: DATABASE_URL if set, else the app's own
  # Active Record configuration for the environment (PostgreSQL only), else
  # config.tasker.database_url.
  module RailsDatabase
    POSTGRES_ADAPTERS = %w[postgresql postgres postgis].freeze

    module_function

    # `active_record`: the environment's configuration Hash (Symbol keys, as Active Record's
    # configuration_hash), or nil.
    def resolve(env: ENV, active_record: nil, configured: nil)
      present(env["DATABASE_URL"]) || (active_record && url_from(active_record)) || present(configured)
    end

    # A postgresql:// URL for an Active Record configuration; nil for another adapter or one
    # that names no database.
    def url_from(config)
      config = config.transform_keys(&:to_sym)
      return present(config[:url]) if present(config[:url])&.match?(%r{\Apostgres(ql)?://})
      return nil unless POSTGRES_ADAPTERS.include?(config[:adapter].to_s)
      return nil unless present(config[:database]&.to_s)

      host = config[:host].to_s
      # A host starting with / is a Unix socket directory: libpq and sqlx take it as ?host=.
      socket = host.start_with?("/")
      query = { "host" => (host if socket), "sslmode" => config[:sslmode] }.compact
      user = config[:username] || config[:user]
      "postgresql://#{userinfo(user, config[:password])}#{socket ? "" : host}" \
        "#{":#{config[:port]}" if config[:port]}/#{escape(config[:database])}" \
        "#{"?#{query.map { |k, v| "#{k}=#{escape(v)}" }.join("&")}" unless query.empty?}"
    end

    def userinfo(user, password)
      return "" unless present(user&.to_s)

      password = present(password&.to_s)
      "#{escape(user)}#{":#{escape(password)}" if password}@"
    end

    def escape(value)
      ERB::Util.url_encode(value.to_s)
    end

    def present(value)
      value.nil? || value.to_s.strip.empty? ? nil : value
    end
  end
end
