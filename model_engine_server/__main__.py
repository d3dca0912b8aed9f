from model_engine_server.cli import app

app()
