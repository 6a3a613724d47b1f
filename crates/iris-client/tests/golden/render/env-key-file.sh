export OPENAI_BASE_URL=http://127.0.0.1:4747/v1
export OPENAI_API_KEY="$(cat /home/alice/.config/iris/key)"
export ANTHROPIC_BASE_URL=http://127.0.0.1:4747
export ANTHROPIC_API_KEY="$(cat /home/alice/.config/iris/key)"
