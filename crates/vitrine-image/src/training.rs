//! Training an image classifier: what this family does its own way in the shared recipe.

use std::marker::PhantomData;

use anyhow::Result;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use vitrine_core::classifier::{ClassifierModel, ClassifierTask, score};
use vitrine_core::config::Settings;
use vitrine_core::data::{BatchSource, ImageBatch, ImageBatches, ImageSplits, PixelRange};
use vitrine_core::plot::confusion_png;
use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::train::{Batches, Built, FitOutcome, HeldOut, Recipe, TrainContext, build_optimizer, recipe};

use crate::backbones::{Backbone, Mobilenet, MobilenetSize, Resnet, ResnetDepth, load_torchvision};
use crate::config::{Architecture, ImageConfig, ImageModelConfig, TASK};
use crate::data::{batches, load_data};
use crate::model::{FashionCnn, ResnetSmall};

/// An image classifier Vitrine can build, train, save and load.
pub trait ImageNet: ClassifierModel<Input = Tensor<4>> + ModuleSnapshot {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self;

    /// The network with the config's pretrained weights, for a new run.
    fn load_pretrained(self, _config: &ImageConfig) -> Result<Self> {
        Ok(self)
    }
}

impl ImageNet for Backbone {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self {
        build_backbone(&config.model, classes, device)
    }

    fn load_pretrained(self, config: &ImageConfig) -> Result<Self> {
        match &config.model.pretrained {
            // Frozen parameters stay frozen: loading keeps each parameter's gradient setting.
            Some(path) => load_torchvision(self, path, false),
            None => Ok(self),
        }
    }
}

/// The configured torchvision network, frozen and with its backbone learning rate as configured.
pub fn build_backbone(m: &ImageModelConfig, classes: usize, device: &Device) -> Backbone {
    let net = match m.name {
        Architecture::Resnet18 => Backbone::Resnet(Resnet::new(ResnetDepth::R18, m.width(), classes, m.dropout, device)),
        Architecture::Resnet34 => Backbone::Resnet(Resnet::new(ResnetDepth::R34, m.width(), classes, m.dropout, device)),
        Architecture::Resnet50 => Backbone::Resnet(Resnet::new(ResnetDepth::R50, m.width(), classes, m.dropout, device)),
        Architecture::MobilenetV3Large => Backbone::Mobilenet(Mobilenet::new(MobilenetSize::Large, m.width_mult, classes, m.dropout, device)),
        Architecture::MobilenetV3Small => Backbone::Mobilenet(Mobilenet::new(MobilenetSize::Small, m.width_mult, classes, m.dropout, device)),
        Architecture::FashionCnn | Architecture::ResnetSmall => unreachable!("{} is not a torchvision backbone", m.name.name()),
    };
    let frozen = if m.freeze_backbone { usize::MAX } else { m.freeze_stages };
    net.with_backbone_lr(m.backbone_lr()).freeze(frozen)
}

impl ImageNet for FashionCnn {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self {
        FashionCnn::new(config.data.image, classes, config.model.dropout, device)
    }
}

impl ImageNet for ResnetSmall {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self {
        ResnetSmall::with_width(config.data.image, classes, config.model.dropout, config.model.width(), device)
    }
}

/// Trains the configured model into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train(config: &ImageConfig, ctx: &TrainContext) -> Result<RunReport> {
    match config.model.name {
        Architecture::FashionCnn => recipe::train(&ImageRecipe::<FashionCnn>::new(config), ctx),
        Architecture::ResnetSmall => recipe::train(&ImageRecipe::<ResnetSmall>::new(config), ctx),
        _ => recipe::train(&ImageRecipe::<Backbone>::new(config), ctx),
    }
}

/// The image classifier's part of the recipe, for network `M`.
struct ImageRecipe<'a, M> {
    config: &'a ImageConfig,
    _model: PhantomData<M>,
}

impl<'a, M> ImageRecipe<'a, M> {
    fn new(config: &'a ImageConfig) -> Self {
        Self { config, _model: PhantomData }
    }
}

impl<M: ImageNet> Recipe for ImageRecipe<'_, M> {
    type Data = ImageSplits;
    type Task = ClassifierTask<M, ImageBatch>;

    fn task_name(&self) -> &'static str {
        TASK
    }

    fn settings(&self) -> &dyn Settings {
        self.config
    }

    fn load_data(&self, ctx: &TrainContext) -> Result<ImageSplits> {
        load_data(self.config, ctx.reporter)
    }

    fn classes(&self, data: &ImageSplits) -> Vec<String> {
        data.train.classes.clone()
    }

    fn build(&self, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self::Task>> {
        let mut model = M::build(self.config, data.train.classes.len(), train_device);
        if !ctx.resuming {
            // A resumed run's checkpoint replaces the weights anyway.
            model = model.load_pretrained(self.config)?;
        }
        let parameters = model.num_params();
        let optimizer = build_optimizer(&self.config.train.optimizer, self.config.train.grad_clip_norm);
        let task = ClassifierTask::new(model, optimizer, train_device);
        Ok(Built { task, description: self.config.model.name.name().into(), parameters })
    }

    fn batches(&self, data: &ImageSplits, train_device: &Device, device: &Device) -> Result<(Batches<ImageBatch>, Batches<ImageBatch>)> {
        let (train, valid) = batches(self.config, data, train_device, device);
        Ok((Box::new(train), Box::new(valid)))
    }

    fn evaluate(&self, task: &Self::Task, data: &ImageSplits, _outcome: &FitOutcome, ctx: &TrainContext) -> Result<HeldOut> {
        let Some(test) = &data.test else { return Ok(HeldOut::default()) };
        let classes = &data.train.classes;
        let model = task.model().valid();
        let batches = ImageBatches::ordered(test.clone(), self.config.train.batch_size, PixelRange::Unit, ctx.compute.device.clone());
        let scores = score(&model, batches.batches(0), classes);
        confusion_png(&ctx.run.file("confusion.png"), &scores.confusion, classes)?;
        ctx.reporter.info(&format!("test: accuracy {:.2}%, macro-F1 {:.4}", 100.0 * scores.accuracy, scores.macro_f1));
        Ok(HeldOut { test: Some(scores), ..HeldOut::default() })
    }

    fn data_summary(&self, data: &ImageSplits) -> DataSummary {
        DataSummary::of_images(data)
    }
}
